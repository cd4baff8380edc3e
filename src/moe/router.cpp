// Router forward and backward (docs/layer.md, "Router"). Per-token work runs in parallel over tokens;
// the products with the router weights go through sgemm_parallel.
#include "moe/router.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "core/error.h"
#include "core/gemm.h"

namespace moepp {
namespace {

// Indices of the k largest of v[0..n), descending; ties go to the lower index.
void top_k(const float* v, int64_t n, int64_t k, int32_t* out) {
  for (int64_t j = 0; j < k; ++j) {
    int32_t best = -1;
    for (int64_t i = 0; i < n; ++i) {
      bool taken = false;
      for (int64_t m = 0; m < j; ++m) taken |= out[m] == i;
      if (taken) continue;
      if (best < 0 || v[i] > v[best]) best = static_cast<int32_t>(i);
    }
    out[j] = best;
  }
}

void softmax(const float* in, int64_t n, float* out) {
  float mx = in[0];
  for (int64_t i = 1; i < n; ++i) mx = std::max(mx, in[i]);
  float sum = 0.0f;
  for (int64_t i = 0; i < n; ++i) {
    out[i] = std::exp(in[i] - mx);
    sum += out[i];
  }
  const float inv = 1.0f / sum;
  for (int64_t i = 0; i < n; ++i) out[i] *= inv;
}

}  // namespace

void router_logits_forward(float* z, float* gate_h, const float* x, const float* z_prev, const MoeParams& prm,
                           const MoeConfig& cfg, int64_t T) {
  const int64_t D = cfg.hidden, E = cfg.n_experts;
  // z = x · Wg^T, or tanh(x · W0^T) · W2^T
  if (cfg.two_layer_gate) {
    const int64_t H = cfg.gate_hidden();
    sgemm_parallel(false, true, T, H, D, 1.0f, x, D, prm.wg0.ptr(), D, 0.0f, gate_h, H);
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < T * H; ++i) gate_h[i] = std::tanh(gate_h[i]);
    sgemm_parallel(false, true, T, E, H, 1.0f, gate_h, H, prm.wg2.ptr(), H, 0.0f, z, E);
  } else {
    sgemm_parallel(false, true, T, E, D, 1.0f, x, D, prm.wg.ptr(), D, 0.0f, z, E);
  }
  if (cfg.uses_residual())  // z += z_prev · Wmap^T
    sgemm_parallel(false, true, T, E, E, 1.0f, z_prev, E, prm.gate_map.ptr(), E, 1.0f, z, E);
}

void router_select_forward(int32_t* ids_out, float* w_out, uint8_t* kept_out, float* s_out, float* p_out,
                           float* sigma_out, float* norm_out, const float* z_all, const MoeConfig& cfg, int64_t T) {
  const int64_t E = cfg.n_experts, W = cfg.slot_width(), K = cfg.top_k;
  const bool relu = cfg.router == RouterKind::kRelu;
  const bool force_zero = cfg.router == RouterKind::kMoepp || cfg.router == RouterKind::kAdaMoe;
  const int64_t first_zero = cfg.first_zero();

#pragma omp parallel for schedule(static)
  for (int64_t t = 0; t < T; ++t) {
    const float* z = z_all + t * E;
    int32_t* ids = ids_out + t * W;
    float* w = w_out + t * W;
    uint8_t* kept = kept_out + t * W;
    std::fill(ids, ids + W, -1);
    std::fill(w, w + W, 0.0f);
    std::fill(kept, kept + W, uint8_t{0});
    if (relu) {
      int64_t k = 0;
      for (int64_t e = 0; e < E; ++e)
        if (z[e] > 0.0f) {
          ids[k] = static_cast<int32_t>(e);
          w[k] = z[e];
          kept[k] = 1;
          ++k;
        }
      continue;
    }
    float* s = s_out + t * E;
    float* p = p_out + t * E;
    sigma_out[t] = 0.0f;
    norm_out[t] = 0.0f;
    if (cfg.logits_norm) {
      float mean = 0.0f;
      for (int64_t e = 0; e < E; ++e) mean += z[e];
      mean /= static_cast<float>(E);
      float var = 0.0f;
      for (int64_t e = 0; e < E; ++e) var += (z[e] - mean) * (z[e] - mean);
      const float sigma = std::sqrt(var / static_cast<float>(E - 1));
      sigma_out[t] = sigma;
      for (int64_t e = 0; e < E; ++e) s[e] = sigma > 0.0f ? z[e] / sigma * cfg.gate_norm_std : 0.0f;
    } else {
      std::copy(z, z + E, s);
    }
    if (cfg.zc_bias != 0.0f)
      for (int64_t e = cfg.n_ffn(); e < E; ++e) s[e] += cfg.zc_bias;
    softmax(s, E, p);
    for (int64_t k = 0; k < K; ++k) kept[k] = 1;
    if (cfg.mixtral_gating) {
      top_k(s, E, K, ids);
      float sel[64];
      std::vector<float> sel_heap;
      float* sv = sel;
      if (K > 64) {
        sel_heap.resize(2 * K);
        sv = sel_heap.data();
      }
      for (int64_t k = 0; k < K; ++k) sv[k] = s[ids[k]];
      softmax(sv, K, w);
    } else {
      top_k(p, E, K, ids);
      float sum = 0.0f;
      for (int64_t k = 0; k < K; ++k) {
        const bool zero = force_zero && ids[k] >= first_zero;
        w[k] = zero ? 0.0f : p[ids[k]];
        sum += w[k];
      }
      norm_out[t] = sum;
      for (int64_t k = 0; k < K; ++k) w[k] = sum > 0.0f ? w[k] / sum : 0.0f;
    }
  }
}

void router_backward(float* dx, float* dz_prev, MoeParams& g, const float* dw, const float* dz_out,
                     const float* aux_dp, const float* relu_count, const RouterActivations& act,
                     const SlotsView& slots, const float* x, const float* z_prev, const MoeParams& prm,
                     const MoeConfig& cfg, int64_t T) {
  check(cfg.zc_bias == 0.0f, "router: zc_bias is for inference only (the backward does not include it)");
  const int64_t D = cfg.hidden, E = cfg.n_experts, W = slots.width, K = cfg.top_k;
  const bool relu = cfg.router == RouterKind::kRelu;
  const bool force_zero = cfg.router == RouterKind::kMoepp || cfg.router == RouterKind::kAdaMoe;
  const int64_t first_zero = cfg.first_zero();
  const bool has_aux = cfg.training && aux_dp != nullptr;
  std::vector<float> dz_all(T * E);
  float l1_scale = 0.0f;
  if (relu && cfg.training && T > 0)
    l1_scale = cfg.relu_l1_coef * static_cast<float>(E) / (static_cast<float>(K) * static_cast<float>(T) * T);

#pragma omp parallel
  {
    std::vector<float> dp(E), ds(E);
#pragma omp for schedule(static)
    for (int64_t t = 0; t < T; ++t) {
      const int32_t* ids = slots.ids + t * W;
      const float* w = slots.w + t * W;
      const float* dwt = dw + t * W;
      const float* z = act.z + t * E;
      float* dz = dz_all.data() + t * E;
      if (relu) {
        std::fill(ds.begin(), ds.end(), 0.0f);
        for (int64_t k = 0; k < W && ids[k] >= 0; ++k) ds[ids[k]] += dwt[k];
        for (int64_t e = 0; e < E; ++e)
          dz[e] = z[e] > 0.0f ? ds[e] + l1_scale * relu_count[e] : 0.0f;
      } else {
        const float* p = act.p + t * E;
        for (int64_t e = 0; e < E; ++e) dp[e] = has_aux ? aux_dp[e] : 0.0f;
        std::fill(ds.begin(), ds.end(), 0.0f);
        if (cfg.mixtral_gating) {  // w = softmax(s_sel)
          float dot = 0.0f;
          for (int64_t k = 0; k < K; ++k) dot += dwt[k] * w[k];
          for (int64_t k = 0; k < K; ++k) ds[ids[k]] += w[k] * (dwt[k] - dot);
        } else if (act.norm[t] > 0.0f) {  // w = q / sum(q), q = p or 0 (zero experts)
          float dot = 0.0f;
          for (int64_t k = 0; k < K; ++k) dot += dwt[k] * w[k];
          const float inv = 1.0f / act.norm[t];
          for (int64_t k = 0; k < K; ++k) {
            if (force_zero && ids[k] >= first_zero) continue;
            dp[ids[k]] += (dwt[k] - dot) * inv;
          }
        }
        // softmax backward: ds += p * (dp - <dp, p>)
        float dpp = 0.0f;
        for (int64_t e = 0; e < E; ++e) dpp += dp[e] * p[e];
        for (int64_t e = 0; e < E; ++e) ds[e] += p[e] * (dp[e] - dpp);
        if (cfg.logits_norm) {  // s = g * z / sigma(z)
          const float sigma = act.sigma[t];
          if (sigma > 0.0f) {
            float mean = 0.0f, dsz = 0.0f;
            for (int64_t e = 0; e < E; ++e) {
              mean += z[e];
              dsz += ds[e] * z[e];
            }
            mean /= static_cast<float>(E);
            const float gs = cfg.gate_norm_std / sigma;
            const float c = dsz / (static_cast<float>(E - 1) * sigma * sigma);
            for (int64_t e = 0; e < E; ++e) dz[e] = gs * (ds[e] - (z[e] - mean) * c);
          } else {
            for (int64_t e = 0; e < E; ++e) dz[e] = 0.0f;
          }
        } else {
          for (int64_t e = 0; e < E; ++e) dz[e] = ds[e];
        }
      }
      if (dz_out)
        for (int64_t e = 0; e < E; ++e) dz[e] += dz_out[t * E + e];
    }
  }

  const float* dzp = dz_all.data();
  if (cfg.uses_residual()) {
    if (dz_prev) sgemm_parallel(false, false, T, E, E, 1.0f, dzp, E, prm.gate_map.ptr(), E, 1.0f, dz_prev, E);
    sgemm_parallel(true, false, E, E, T, 1.0f, dzp, E, z_prev, E, 1.0f, g.gate_map.ptr(), E);
  }
  if (cfg.two_layer_gate) {
    const int64_t H = cfg.gate_hidden();
    std::vector<float> dh(T * H);
    // dh = dz · W2 ; dW2 += dz^T · h ; dpre = dh * (1 - h^2)
    sgemm_parallel(false, false, T, H, E, 1.0f, dzp, E, prm.wg2.ptr(), H, 0.0f, dh.data(), H);
    sgemm_parallel(true, false, E, H, T, 1.0f, dzp, E, act.gate_h, H, 1.0f, g.wg2.ptr(), H);
    const float* h = act.gate_h;
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < T * H; ++i) dh[i] *= 1.0f - h[i] * h[i];
    sgemm_parallel(true, false, H, D, T, 1.0f, dh.data(), H, x, D, 1.0f, g.wg0.ptr(), D);
    sgemm_parallel(false, false, T, D, H, 1.0f, dh.data(), H, prm.wg0.ptr(), D, 1.0f, dx, D);
  } else {
    sgemm_parallel(true, false, E, D, T, 1.0f, dzp, E, x, D, 1.0f, g.wg.ptr(), D);
    sgemm_parallel(false, false, T, D, E, 1.0f, dzp, E, prm.wg.ptr(), D, 1.0f, dx, D);
  }
}

}  // namespace moepp
