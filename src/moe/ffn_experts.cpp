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

void gather_rows(float* out, const float* x_in, const int32_t* slots, int64_t n, int64_t W, int64_t D) {
  for (int64_t r = 0; r < n; ++r)
    std::memcpy(out + r * D, x_in + static_cast<int64_t>(slots[r] / W) * D, sizeof(float) * D);
}

}  // namespace

void ffn_experts_forward(float* h, float* a, float* o, const float* x_in, const FfnRowsView& rows,
                         const MoeParams& prm, const MoeConfig& cfg, int64_t W) {
  const int64_t D = cfg.hidden, I = cfg.intermediate, NF = cfg.n_ffn();
  if (rows.offset[NF] == 0) return;
  const int64_t kChunk = chunk_rows(cfg);
  const std::vector<Item> items = row_chunks(rows.offset, NF, kChunk);
#pragma omp parallel
  {
    std::vector<float> xbuf(kChunk * D);
#pragma omp for schedule(dynamic, 1)
    for (size_t it = 0; it < items.size(); ++it) {
      const Item& c = items[it];
      const int64_t m = c.r1 - c.r0;
      gather_rows(xbuf.data(), x_in, rows.slot + c.r0, m, W, D);
      float* hc = h + c.r0 * 2 * I;
      float* ac = a + c.r0 * I;
      sgemm(false, true, m, 2 * I, D, 1.0f, xbuf.data(), D, prm.up[c.expert].ptr(), D, 0.0f, hc, 2 * I);
      for (int64_t r = 0; r < m; ++r) swiglu_row(ac + r * I, hc + r * 2 * I, I);
      sgemm(false, true, m, D, I, 1.0f, ac, I, prm.down[c.expert].ptr(), I, 0.0f, o + c.r0 * D, D);
    }
  }
}

void ffn_experts_backward(float* dx_rows, float* dw, MoeParams& g, float* x_rows, float* do_rows, float* dh_rows,
                          const float* dy, const float* x_in, const float* h_rows, const float* a_rows,
                          const float* o_rows, const float* w, const FfnRowsView& rows, const MoeParams& prm,
                          const MoeConfig& cfg, int64_t W) {
  const int64_t D = cfg.hidden, I = cfg.intermediate, NF = cfg.n_ffn();
  if (rows.offset[NF] == 0) return;
  const int64_t kChunk = chunk_rows(cfg);
  const std::vector<Item> items = row_chunks(rows.offset, NF, kChunk);
  // Pass A, per row chunk: dO, dw, dA, dH, X, dX.
#pragma omp parallel
  {
    std::vector<float> da(kChunk * I);
#pragma omp for schedule(dynamic, 1)
    for (size_t it = 0; it < items.size(); ++it) {
      const Item& c = items[it];
      const int64_t m = c.r1 - c.r0;
      float* dout = do_rows + c.r0 * D;
      const float* o = o_rows + c.r0 * D;
      for (int64_t r = 0; r < m; ++r) {
        const int32_t slot = rows.slot[c.r0 + r];
        const float* dyt = dy + static_cast<int64_t>(slot / W) * D;
        const float wt = w[slot];
        float dot = 0.0f;
        for (int64_t j = 0; j < D; ++j) {
          dout[r * D + j] = wt * dyt[j];
          dot += dyt[j] * o[r * D + j];
        }
        dw[slot] = dot;
      }
      // dA = dO · down  ([m, D] · [D, I])
      sgemm(false, false, m, I, D, 1.0f, dout, D, prm.down[c.expert].ptr(), I, 0.0f, da.data(), I);
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
      gather_rows(x_rows + c.r0 * D, x_in, rows.slot + c.r0, m, W, D);
      // dX = dH · up  ([m, 2I] · [2I, D])
      sgemm(false, false, m, D, 2 * I, 1.0f, dh, 2 * I, prm.up[c.expert].ptr(), D, 0.0f, dx_rows + c.r0 * D, D);
    }
  }
  // Pass B, per block of weight-gradient rows: d_up[j0:j1] += dH[:, j0:j1]^T · X ; d_down likewise.
  struct GradItem {
    int64_t expert;
    bool up;
    int64_t j0, j1;
  };
  std::vector<GradItem> gitems;
  constexpr int64_t kBlock = 256;
  for (int64_t e = 0; e < NF; ++e) {
    if (rows.offset[e + 1] == rows.offset[e]) continue;
    for (int64_t j = 0; j < 2 * I; j += kBlock) gitems.push_back({e, true, j, std::min(2 * I, j + kBlock)});
    for (int64_t j = 0; j < D; j += kBlock) gitems.push_back({e, false, j, std::min(D, j + kBlock)});
  }
#pragma omp parallel for schedule(dynamic, 1)
  for (size_t it = 0; it < gitems.size(); ++it) {
    const GradItem& c = gitems[it];
    const int64_t off = rows.offset[c.expert], n = rows.offset[c.expert + 1] - off;
    if (c.up) {
      sgemm(true, false, c.j1 - c.j0, D, n, 1.0f, dh_rows + off * 2 * I + c.j0, 2 * I, x_rows + off * D, D, 1.0f,
            g.up[c.expert].ptr() + c.j0 * D, D);
    } else {
      sgemm(true, false, c.j1 - c.j0, I, n, 1.0f, do_rows + off * D + c.j0, D, a_rows + off * I, I, 1.0f,
            g.down[c.expert].ptr() + c.j0 * I, I);
    }
  }
}

}  // namespace moepp
