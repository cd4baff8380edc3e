// lm_head + cross-entropy, chunked over rows (see lm_head_ce.h). The products go through
// sgemm_parallel; the per-row softmax work is split over threads.
#include "model/lm_head_ce.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "core/gemm.h"
#include "core/profile.h"
#include "core/fast_exp.h"

namespace moepp {
namespace {

int64_t count_targets(const int32_t* targets, int64_t N) {
  if (!targets) return 0;
  int64_t c = 0;
  for (int64_t n = 0; n < N; ++n) c += targets[n] != -1;
  return c;
}

float row_max(const float* z, int64_t V) {
  float mx = z[0];
#pragma omp simd reduction(max : mx)
  for (int64_t j = 0; j < V; ++j) mx = z[j] > mx ? z[j] : mx;
  return mx;
}

// sum_j exp(z_j - shift), summed in double; when out is not null it also stores the exps there
// (out may alias z).
double row_sum_exp(float* out, const float* z, int64_t V, float shift) {
  double s = 0.0;
  if (out) {
#pragma omp simd reduction(+ : s)
    for (int64_t j = 0; j < V; ++j) {
      const float e = exp_vec(z[j] - shift);
      out[j] = e;
      s += e;
    }
  } else {
#pragma omp simd reduction(+ : s)
    for (int64_t j = 0; j < V; ++j) s += exp_vec(z[j] - shift);
  }
  return s;
}

// In place: z [rows, V] logits -> their gradient (softmax - onehot) * inv_count (0 for ignored rows),
// softmax = exp(z - lse).
void ce_grad_rows(float* z, const float* lse, const int32_t* targets, int64_t rows, int64_t V, float inv_count) {
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; ++r) {
    float* zr = z + r * V;
    if (targets[r] == -1) {
      std::fill(zr, zr + V, 0.0f);
      continue;
    }
    const float l = lse[r];
#pragma omp simd
    for (int64_t j = 0; j < V; ++j) zr[j] = exp_vec(zr[j] - l) * inv_count;
    zr[targets[r]] -= inv_count;
  }
}

// dxf rows = dlogits · W; dW += dlogits^T · xf rows. Chunks whose rows are all ignored are skipped.
void head_backward_chunk(float* dxf, float* dW, const float* dlogits, const float* xf, const float* W,
                         const int32_t* targets, int64_t rows, int64_t D, int64_t V) {
  if (count_targets(targets, rows) == 0) {
    std::fill(dxf, dxf + rows * D, 0.0f);
    return;
  }
  {
    ProfileScope ps("fwd.head/dxf_gemm");
    sgemm_parallel(false, false, rows, D, V, 1.0f, dlogits, V, W, D, 0.0f, dxf, D);
  }
  ProfileScope ps("fwd.head/dW_gemm");
  sgemm_parallel(true, false, V, D, rows, 1.0f, dlogits, V, xf, D, 1.0f, dW, D);
}

}  // namespace

int64_t lm_head_chunk_rows(int64_t N, int64_t V) {
  const int64_t budget = int64_t{1} << 22;  // floats of logits per chunk (16 MiB)
  return std::min(N, std::max<int64_t>(16, budget / std::max<int64_t>(V, 1)));
}

float lm_head_ce_forward(float* logits, float* lse, float* dxf, float* dW, LmHeadScratch& sc, const float* xf,
                         const float* W, const int32_t* targets, int64_t N, int64_t D, int64_t V, int64_t mean_over) {
  const int64_t count = count_targets(targets, N);
  const int64_t denom = mean_over > 0 ? mean_over : count;
  if (!logits && count == 0) {  // nothing asked for
    if (dxf) std::fill(dxf, dxf + N * D, 0.0f);
    return 0.0f;
  }
  const int64_t R = lm_head_chunk_rows(N, V);
  const bool fused = dxf != nullptr && count > 0;
  if (!logits || fused) sc.chunk.resize(static_cast<size_t>(R) * V);
  const float inv_count = count > 0 ? 1.0f / static_cast<float>(denom) : 0.0f;
  double loss = 0.0;
  for (int64_t n0 = 0; n0 < N; n0 += R) {
    const int64_t rows = std::min(N, n0 + R) - n0;
    // z = xf · W^T   [rows, V]
    float* z = logits ? logits + n0 * V : sc.chunk.data();
    {
      ProfileScope ps("fwd.head/logits_gemm");
      sgemm_parallel(false, true, rows, V, D, 1.0f, xf + n0 * D, D, W, D, 0.0f, z, V);
    }
    if (count == 0) continue;
    const int32_t* tg = targets + n0;
    // Per row: lse, the loss term and (fused) the gradient (softmax - onehot) / count, one exp pass.
    float* g = fused ? sc.chunk.data() : nullptr;
    double part = 0.0;
#pragma omp parallel for schedule(static) reduction(+ : part)
    for (int64_t r = 0; r < rows; ++r) {
      const float* zr = z + r * V;
      const int32_t t = tg[r];
      const float zt = t != -1 ? zr[t] : 0.0f;
      const float mx = row_max(zr, V);
      float* gr = g ? g + r * V : nullptr;
      const double sum = row_sum_exp(gr, zr, V, mx);
      const float l = mx + static_cast<float>(std::log(sum));
      lse[n0 + r] = l;
      if (t == -1) {
        if (gr) std::fill(gr, gr + V, 0.0f);
        continue;
      }
      part += static_cast<double>(l) - zt;
      if (gr) {
        const float scale = static_cast<float>(static_cast<double>(inv_count) / sum);
#pragma omp simd
        for (int64_t j = 0; j < V; ++j) gr[j] *= scale;
        gr[t] -= inv_count;
      }
    }
    loss += part;
    if (fused) head_backward_chunk(dxf + n0 * D, dW, g, xf + n0 * D, W, tg, rows, D, V);
  }
  if (dxf && !fused) std::fill(dxf, dxf + N * D, 0.0f);
  return count > 0 ? static_cast<float>(loss / static_cast<double>(denom)) : 0.0f;
}

void lm_head_ce_backward(float* dxf, float* dW, LmHeadScratch& sc, const float* xf, const float* W,
                         const int32_t* targets, const float* lse, int64_t N, int64_t D, int64_t V, int64_t mean_over) {
  const int64_t count = count_targets(targets, N);
  if (count == 0) {
    std::fill(dxf, dxf + N * D, 0.0f);
    return;
  }
  const int64_t R = lm_head_chunk_rows(N, V);
  sc.chunk.resize(static_cast<size_t>(R) * V);
  const float inv_count = 1.0f / static_cast<float>(mean_over > 0 ? mean_over : count);
  for (int64_t n0 = 0; n0 < N; n0 += R) {
    const int64_t rows = std::min(N, n0 + R) - n0;
    const int32_t* tg = targets + n0;
    if (count_targets(tg, rows) == 0) {
      std::fill(dxf + n0 * D, dxf + (n0 + rows) * D, 0.0f);
      continue;
    }
    float* z = sc.chunk.data();
    sgemm_parallel(false, true, rows, V, D, 1.0f, xf + n0 * D, D, W, D, 0.0f, z, V);
    ce_grad_rows(z, lse + n0, tg, rows, V, inv_count);
    head_backward_chunk(dxf + n0 * D, dW, z, xf + n0 * D, W, tg, rows, D, V);
  }
}

}  // namespace moepp
