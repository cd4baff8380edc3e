// Grouped SwiGLU experts: work items, gathers and the GEMM calls (see ffn_experts.h).
#include "moe/ffn_experts.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "core/gemm.h"
#include "core/fast_exp.h"

namespace moepp {
namespace {

// Rows per forward/backward work item: 256 at the paper's D 768 x I 2048 expert (bench/), more for
// smaller experts so that a chunk keeps about the same work (smaller GEMMs lose efficiency).
int64_t chunk_rows(const MoeConfig& cfg) {
  const double ref = 768.0 * 2048.0, work = static_cast<double>(cfg.hidden) * static_cast<double>(cfg.intermediate);
  return std::clamp<int64_t>(static_cast<int64_t>(256.0 * ref / work), 256, 1024);
}

struct Item {
  int64_t expert, r0, r1;  // rows [r0, r1) of the concatenated FFN rows, or output rows for weight grads
};

// Chunks of every expert's rows, largest first so that dynamic scheduling balances the threads.
std::vector<Item> row_chunks(const int64_t* offset, int64_t n_experts, int64_t chunk) {
  std::vector<Item> items;
  for (int64_t e = 0; e < n_experts; ++e) {
    const int64_t n = offset[e + 1] - offset[e];
    if (n == 0) continue;
    const int64_t pieces = (n + chunk - 1) / chunk;
    const int64_t step = (n + pieces - 1) / pieces;
    for (int64_t r = offset[e]; r < offset[e + 1]; r += step)
      items.push_back({static_cast<int64_t>(e), r, std::min(offset[e + 1], r + step)});
  }
  std::stable_sort(items.begin(), items.end(), [](const Item& a, const Item& b) { return a.r1 - a.r0 > b.r1 - b.r0; });
  return items;
}

// Vectorisable sigmoid (exp_vec: relative error < 2e-7; std::exp is a scalar libm call).
inline float sigmoid(float v) { return 1.0f / (1.0f + exp_vec(-v)); }

// out [n, D] = the inputs of rows r0 .. r0 + n - 1.
void gather_rows(float* out, const FfnRowInputs& in, int64_t r0, int64_t n, int64_t D) {
  if (in.slot == nullptr) {
    std::memcpy(out, in.x + r0 * D, sizeof(float) * n * D);
    return;
  }
  for (int64_t r = 0; r < n; ++r)
    std::memcpy(out + r * D, in.x + static_cast<int64_t>(in.slot[r0 + r] / in.width) * D, sizeof(float) * D);
}

}  // namespace

void ffn_experts_forward(float* h, float* a, float* o, const FfnRowInputs& in, const int64_t* offset,
                         const MoeParams& prm, const MoeConfig& cfg, int64_t first_expert, int64_t n_experts) {
  const int64_t D = cfg.hidden, I = cfg.intermediate;
  if (offset[n_experts] == 0) return;
  const int64_t kChunk = chunk_rows(cfg);
  const std::vector<Item> items = row_chunks(offset, n_experts, kChunk);
#pragma omp parallel
  {
    std::vector<float> xbuf(in.slot ? kChunk * D : 0);
#pragma omp for schedule(dynamic, 1)
    for (size_t it = 0; it < items.size(); ++it) {
      const Item& c = items[it];
      const int64_t m = c.r1 - c.r0, e = first_expert + c.expert;
      const float* xc = in.x + c.r0 * D;
      if (in.slot) {
        gather_rows(xbuf.data(), in, c.r0, m, D);
        xc = xbuf.data();
      }
      float* hc = h + c.r0 * 2 * I;
      float* ac = a + c.r0 * I;
      sgemm(false, true, m, 2 * I, D, 1.0f, xc, D, prm.up[e].ptr(), D, 0.0f, hc, 2 * I);
      for (int64_t r = 0; r < m; ++r) swiglu_row(ac + r * I, hc + r * 2 * I, I);
      sgemm(false, true, m, D, I, 1.0f, ac, I, prm.down[e].ptr(), I, 0.0f, o + c.r0 * D, D);
    }
  }
}

void ffn_slot_backward(float* do_rows, float* dw, const float* dy, const float* o_rows, const float* w,
                       const int32_t* slot, int64_t rows, int64_t W, int64_t D) {
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; ++r) {
    const int32_t s = slot[r];
    const float* dyt = dy + static_cast<int64_t>(s / W) * D;
    const float* o = o_rows + r * D;
    float* dout = do_rows + r * D;
    const float wt = w[s];
    float dot = 0.0f;
    for (int64_t j = 0; j < D; ++j) {
      dout[j] = wt * dyt[j];
      dot += dyt[j] * o[j];
    }
    dw[s] = dot;
  }
}

void ffn_experts_backward(float* dx_rows, MoeParams& g, float* x_rows, float* dh_rows, const float* do_rows,
                          const FfnRowInputs& in, const float* h_rows, const float* a_rows, const int64_t* offset,
                          const MoeParams& prm, const MoeConfig& cfg, int64_t first_expert, int64_t n_experts) {
  const int64_t D = cfg.hidden, I = cfg.intermediate;
  if (offset[n_experts] == 0) return;
  const int64_t kChunk = chunk_rows(cfg);
  const std::vector<Item> items = row_chunks(offset, n_experts, kChunk);
  // Pass A, per row chunk: dA, dH, X, dX.
#pragma omp parallel
  {
    std::vector<float> da(kChunk * I);
#pragma omp for schedule(dynamic, 1)
    for (size_t it = 0; it < items.size(); ++it) {
      const Item& c = items[it];
      const int64_t m = c.r1 - c.r0, e = first_expert + c.expert;
      const float* dout = do_rows + c.r0 * D;
      // dA = dO · down  ([m, D] · [D, I])
      sgemm(false, false, m, I, D, 1.0f, dout, D, prm.down[e].ptr(), I, 0.0f, da.data(), I);
      const float* h = h_rows + c.r0 * 2 * I;
      float* dh = dh_rows + c.r0 * 2 * I;
      for (int64_t r = 0; r < m; ++r) {
        const float* gr = h + r * 2 * I;
        const float* ur = gr + I;
        const float* dar = da.data() + r * I;
        float* dg = dh + r * 2 * I;
        float* du = dg + I;
        for (int64_t j = 0; j < I; ++j) {
          const float sg = sigmoid(gr[j]);
          du[j] = dar[j] * gr[j] * sg;
          dg[j] = dar[j] * ur[j] * sg * (1.0f + gr[j] * (1.0f - sg));
        }
      }
      if (in.slot) gather_rows(x_rows + c.r0 * D, in, c.r0, m, D);
      // dX = dH · up  ([m, 2I] · [2I, D])
      sgemm(false, false, m, D, 2 * I, 1.0f, dh, 2 * I, prm.up[e].ptr(), D, 0.0f, dx_rows + c.r0 * D, D);
    }
  }
  // Pass B, per block of weight-gradient rows: d_up[j0:j1] += dH[:, j0:j1]^T · X ; d_down likewise.
  const float* xr = in.slot ? x_rows : in.x;
  struct GradItem {
    int64_t expert;
    bool up;
    int64_t j0, j1;
  };
  std::vector<GradItem> gitems;
  constexpr int64_t kBlock = 256;
  for (int64_t i = 0; i < n_experts; ++i) {
    if (offset[i + 1] == offset[i]) continue;
    for (int64_t j = 0; j < 2 * I; j += kBlock) gitems.push_back({i, true, j, std::min(2 * I, j + kBlock)});
    for (int64_t j = 0; j < D; j += kBlock) gitems.push_back({i, false, j, std::min(D, j + kBlock)});
  }
#pragma omp parallel for schedule(dynamic, 1)
  for (size_t it = 0; it < gitems.size(); ++it) {
    const GradItem& c = gitems[it];
    const int64_t off = offset[c.expert], n = offset[c.expert + 1] - off, e = first_expert + c.expert;
    if (c.up) {
      sgemm(true, false, c.j1 - c.j0, D, n, 1.0f, dh_rows + off * 2 * I + c.j0, 2 * I, xr + off * D, D, 1.0f,
            g.up[e].ptr() + c.j0 * D, D);
    } else {
      sgemm(true, false, c.j1 - c.j0, I, n, 1.0f, do_rows + off * D + c.j0, D, a_rows + off * I, I, 1.0f,
            g.down[e].ptr() + c.j0 * I, I);
    }
  }
}

}  // namespace moepp
