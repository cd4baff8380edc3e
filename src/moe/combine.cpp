// Fused zero/copy/constant experts and the weighted sum of the slots (see combine.h).
#include "moe/combine.h"

#include <omp.h>

#include <cmath>
#include <vector>

namespace moepp {
namespace {

// a = softmax(Wc · x) for a constant expert (Wc [2, D]).
inline void constant_gate(const float* wc, const float* x, int64_t D, float& a0, float& a1) {
  float l0 = 0.0f, l1 = 0.0f;
  for (int64_t j = 0; j < D; ++j) {
    l0 += wc[j] * x[j];
    l1 += wc[D + j] * x[j];
  }
  const float m = std::max(l0, l1);
  const float e0 = std::exp(l0 - m), e1 = std::exp(l1 - m);
  a0 = e0 / (e0 + e1);
  a1 = e1 / (e0 + e1);
}

}  // namespace

void combine_forward(float* y, const float* x_in, const float* ffn_o, const int32_t* row_of_slot,
                     const SlotsView& slots, const MoeParams& prm, const MoeConfig& cfg, int64_t T) {
  const int64_t D = cfg.hidden, W = slots.width;
#pragma omp parallel for schedule(static)
  for (int64_t t = 0; t < T; ++t) {
    float* yt = y + t * D;
    const float* xt = x_in + t * D;
    for (int64_t j = 0; j < D; ++j) yt[j] = 0.0f;
    for (int64_t k = 0; k < W; ++k) {
      const int64_t slot = t * W + k;
      const int32_t e = slots.ids[slot];
      if (e < 0 || !slots.kept[slot]) continue;
      const float w = slots.w[slot];
      switch (cfg.kind(e)) {
        case ExpertKind::kFfn: {
          const float* o = ffn_o + static_cast<int64_t>(row_of_slot[slot]) * D;
          for (int64_t j = 0; j < D; ++j) yt[j] += w * o[j];
          break;
        }
        case ExpertKind::kCopy:
          for (int64_t j = 0; j < D; ++j) yt[j] += w * xt[j];
          break;
        case ExpertKind::kConstant: {
          const int64_t c = e - cfg.first_constant();
          float a0, a1;
          constant_gate(prm.const_wg[c].ptr(), xt, D, a0, a1);
          const float* v = prm.const_v[c].ptr();
          for (int64_t j = 0; j < D; ++j) yt[j] += w * (a0 * xt[j] + a1 * v[j]);
          break;
        }
        case ExpertKind::kZero:
          break;
      }
    }
  }
}

void combine_backward(float* dx, float* dw_slots, MoeParams& g, const float* dy, const float* ffn_dx,
                      const float* x_in, const int32_t* row_of_slot, const SlotsView& slots, const MoeParams& prm,
                      const MoeConfig& cfg, int64_t T) {
  const int64_t D = cfg.hidden, W = slots.width, NC = cfg.n_constant;
  const float in_scale = cfg.input_scale();
  const int nt = omp_get_max_threads();
  // Per-thread accumulators for the constant experts' gradients: [nt][NC][Wc (2D) | v (D)].
  std::vector<float> acc(static_cast<size_t>(nt) * NC * 3 * D, 0.0f);
#pragma omp parallel
  {
    float* my = acc.data() + static_cast<size_t>(omp_get_thread_num()) * NC * 3 * D;
    std::vector<float> dxin(D);
#pragma omp for schedule(static)
    for (int64_t t = 0; t < T; ++t) {
      const float* xt = x_in + t * D;
      const float* dyt = dy + t * D;
      std::fill(dxin.begin(), dxin.end(), 0.0f);
      for (int64_t k = 0; k < W; ++k) {
        const int64_t slot = t * W + k;
        const int32_t e = slots.ids[slot];
        if (e < 0 || !slots.kept[slot]) continue;
        const float w = slots.w[slot];
        switch (cfg.kind(e)) {
          case ExpertKind::kFfn: {
            const float* d = ffn_dx + static_cast<int64_t>(row_of_slot[slot]) * D;
            for (int64_t j = 0; j < D; ++j) dxin[j] += d[j];
            break;
          }
          case ExpertKind::kCopy: {
            float dot = 0.0f;
            for (int64_t j = 0; j < D; ++j) {
              dot += dyt[j] * xt[j];
              dxin[j] += w * dyt[j];
            }
            dw_slots[slot] = dot;
            break;
          }
          case ExpertKind::kConstant: {
            const int64_t c = e - cfg.first_constant();
            const float* wc = prm.const_wg[c].ptr();
            const float* v = prm.const_v[c].ptr();
            float a0, a1;
            constant_gate(wc, xt, D, a0, a1);
            float dw = 0.0f, da0 = 0.0f, da1 = 0.0f;  // dout = w * dy
            for (int64_t j = 0; j < D; ++j) {
              dw += dyt[j] * (a0 * xt[j] + a1 * v[j]);
              da0 += dyt[j] * xt[j];
              da1 += dyt[j] * v[j];
            }
            da0 *= w;
            da1 *= w;
            dw_slots[slot] = dw;
            const float dot = a0 * da0 + a1 * da1;
            const float dl0 = a0 * (da0 - dot), dl1 = a1 * (da1 - dot);
            float* gwc = my + c * 3 * D;
            float* gv = gwc + 2 * D;
            for (int64_t j = 0; j < D; ++j) {
              dxin[j] += a0 * w * dyt[j] + dl0 * wc[j] + dl1 * wc[D + j];
              gwc[j] += dl0 * xt[j];
              gwc[D + j] += dl1 * xt[j];
              gv[j] += a1 * w * dyt[j];
            }
            break;
          }
          case ExpertKind::kZero:
            dw_slots[slot] = 0.0f;
            break;
        }
      }
      float* dxt = dx + t * D;
      for (int64_t j = 0; j < D; ++j) dxt[j] += in_scale * dxin[j];
    }
  }
  for (int th = 0; th < nt; ++th)
    for (int64_t c = 0; c < NC; ++c) {
      const float* a = acc.data() + (static_cast<size_t>(th) * NC + c) * 3 * D;
      float* gwc = g.const_wg[c].ptr();
      float* gv = g.const_v[c].ptr();
      for (int64_t j = 0; j < 2 * D; ++j) gwc[j] += a[j];
      for (int64_t j = 0; j < D; ++j) gv[j] += a[2 * D + j];
    }
}

}  // namespace moepp
