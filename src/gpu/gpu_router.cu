// Router forward and backward on the GPU (see gpu_router.h): cuBLAS for the products with the router
// weights, one thread per token for the per-token softmax / top-k / backward (E is small: 4..64 in the
// paper's configs, at most 1024), in the CPU layer's order of operations.
#include "gpu/gpu_router.h"

#include "core/error.h"
#include "gpu/cuda_check.h"
#include "gpu/device_math.cuh"
#include "gpu/gpu_gemm.h"

namespace moepp::gpu {
namespace {

constexpr ElemType F32 = ElemType::kF32;

// The router settings the per-token kernels need, from MoeConfig.
struct RouterArgs {
  int E, K;
  int n_ffn, first_zero;
  bool logits_norm, mixtral, force_zero, aux;
  float gate_norm_std, zc_bias;
};

RouterArgs router_args(const MoeConfig& cfg, bool aux) {
  RouterArgs a{};
  a.E = static_cast<int>(cfg.n_experts);
  a.K = static_cast<int>(cfg.top_k);
  a.n_ffn = static_cast<int>(cfg.n_ffn());
  a.first_zero = static_cast<int>(cfg.first_zero());
  a.logits_norm = cfg.logits_norm;
  a.mixtral = cfg.mixtral_gating;
  a.force_zero = cfg.router == RouterKind::kMoepp || cfg.router == RouterKind::kAdaMoe;
  a.aux = aux;
  a.gate_norm_std = cfg.gate_norm_std;
  a.zc_bias = cfg.zc_bias;
  return a;
}

__global__ void tanh_kernel(float* h, int64_t n) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    h[i] = tanhf(h[i]);
}

// dh *= 1 - h^2 (the tanh's derivative).
__global__ void tanh_backward_kernel(float* dh, const float* h, int64_t n) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    dh[i] *= 1.0f - h[i] * h[i];
}

// ids[0..K) = the K largest of v[0..E) by descending value; ties go to the lower index.
__device__ void top_k(int32_t* ids, const float* v, int E, int K) {
  for (int j = 0; j < K; ++j) {
    int best = -1;
    for (int i = 0; i < E; ++i) {
      bool taken = false;
      for (int m = 0; m < j; ++m) taken |= ids[m] == i;
      if (taken) continue;
      if (best < 0 || v[i] > v[best]) best = i;
    }
    ids[j] = best;
  }
}

__global__ void router_select_kernel(int32_t* ids_all, float* w_all, uint8_t* kept_all, float* s_all, float* p_all,
                                     float* sigma_all, float* norm_all, const float* z_all, RouterArgs a, int64_t T) {
  const int64_t t = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (t >= T) return;
  const int E = a.E, K = a.K;
  const float* z = z_all + t * E;
  float* s = s_all + t * E;
  float* p = p_all + t * E;
  int32_t* ids = ids_all + t * K;
  float* w = w_all + t * K;
  uint8_t* kept = kept_all + t * K;
  float sigma = 0.0f;
  if (a.logits_norm) {  // s = z / std(z) * g, unbiased std; s = 0 when std = 0
    float mean = 0.0f;
    for (int e = 0; e < E; ++e) mean += z[e];
    mean /= static_cast<float>(E);
    float var = 0.0f;
    for (int e = 0; e < E; ++e) var += (z[e] - mean) * (z[e] - mean);
    sigma = sqrtf(var / static_cast<float>(E - 1));
    for (int e = 0; e < E; ++e) s[e] = sigma > 0.0f ? z[e] / sigma * a.gate_norm_std : 0.0f;
  } else {
    for (int e = 0; e < E; ++e) s[e] = z[e];
  }
  sigma_all[t] = sigma;
  if (a.zc_bias != 0.0f)
    for (int e = a.n_ffn; e < E; ++e) s[e] += a.zc_bias;
  float mx = s[0];
  for (int e = 1; e < E; ++e) mx = fmaxf(mx, s[e]);
  float sum = 0.0f;
  for (int e = 0; e < E; ++e) {
    p[e] = expf(s[e] - mx);
    sum += p[e];
  }
  const float inv = 1.0f / sum;
  for (int e = 0; e < E; ++e) p[e] *= inv;
  for (int k = 0; k < K; ++k) kept[k] = 1;
  norm_all[t] = 0.0f;
  if (a.mixtral) {  // top K of s, w = softmax over the K selected scores
    top_k(ids, s, E, K);
    float m = s[ids[0]];
    for (int k = 1; k < K; ++k) m = fmaxf(m, s[ids[k]]);
    float den = 0.0f;
    for (int k = 0; k < K; ++k) {
      w[k] = expf(s[ids[k]] - m);
      den += w[k];
    }
    const float id = 1.0f / den;
    for (int k = 0; k < K; ++k) w[k] *= id;
  } else {  // top K of p; zero experts' q = 0; w = q / sum(q) (all 0 when the sum is 0)
    top_k(ids, p, E, K);
    float q = 0.0f;
    for (int k = 0; k < K; ++k) {
      const bool zero = a.force_zero && ids[k] >= a.first_zero;
      w[k] = zero ? 0.0f : p[ids[k]];
      q += w[k];
    }
    norm_all[t] = q;
    for (int k = 0; k < K; ++k) w[k] = q > 0.0f ? w[k] / q : 0.0f;
  }
}

// dz [T, E] from the slot weights' gradients (and the balance loss's d/dp, and dz_out), one token a
// thread; dp [T, E] scratch. The CPU's router_backward, per token.
__global__ void router_dz_kernel(float* dz_all, float* dp_all, const float* dw_all, const float* dz_out,
                                 const float* aux_dp, const int32_t* ids_all, const float* w_all, const float* z_all,
                                 const float* p_all, const float* sigma_all, const float* norm_all, RouterArgs a,
                                 int64_t T) {
  const int64_t t = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (t >= T) return;
  const int E = a.E, K = a.K;
  const int32_t* ids = ids_all + t * K;
  const float* w = w_all + t * K;
  const float* dw = dw_all + t * K;
  const float* z = z_all + t * E;
  const float* p = p_all + t * E;
  float* ds = dz_all + t * E;  // ds first, dz in place at the end
  float* dp = dp_all + t * E;
  for (int e = 0; e < E; ++e) {
    dp[e] = a.aux ? aux_dp[e] : 0.0f;
    ds[e] = 0.0f;
  }
  if (a.mixtral) {  // w = softmax(s_sel)
    float dot = 0.0f;
    for (int k = 0; k < K; ++k) dot += dw[k] * w[k];
    for (int k = 0; k < K; ++k) ds[ids[k]] += w[k] * (dw[k] - dot);
  } else if (norm_all[t] > 0.0f) {  // w = q / sum(q), q = p or 0 (zero experts)
    float dot = 0.0f;
    for (int k = 0; k < K; ++k) dot += dw[k] * w[k];
    const float inv = 1.0f / norm_all[t];
    for (int k = 0; k < K; ++k) {
      if (a.force_zero && ids[k] >= a.first_zero) continue;
      dp[ids[k]] += (dw[k] - dot) * inv;
    }
  }
  float dpp = 0.0f;  // softmax backward: ds += p * (dp - <dp, p>)
  for (int e = 0; e < E; ++e) dpp += dp[e] * p[e];
  for (int e = 0; e < E; ++e) ds[e] += p[e] * (dp[e] - dpp);
  if (a.logits_norm) {  // s = g * z / sigma(z)
    const float sigma = sigma_all[t];
    if (sigma > 0.0f) {
      float mean = 0.0f, dsz = 0.0f;
      for (int e = 0; e < E; ++e) {
        mean += z[e];
        dsz += ds[e] * z[e];
      }
      mean /= static_cast<float>(E);
      const float gs = a.gate_norm_std / sigma;
      const float c = dsz / (static_cast<float>(E - 1) * sigma * sigma);
      for (int e = 0; e < E; ++e) ds[e] = gs * (ds[e] - (z[e] - mean) * c);
    } else {
      for (int e = 0; e < E; ++e) ds[e] = 0.0f;
    }
  }
  if (dz_out)
    for (int e = 0; e < E; ++e) ds[e] += dz_out[t * E + e];
}

}  // namespace

void router_logits_forward(float* z, float* gate_h, const float* x, const float* z_prev, const GpuMoeParams& prm,
                           const MoeConfig& cfg, int64_t T, GpuContext& ctx) {
  const int64_t D = cfg.hidden, E = cfg.n_experts;
  cublasHandle_t h = ctx.blas.get();
  if (cfg.two_layer_gate) {
    const int64_t H = cfg.gate_hidden();
    gemm(h, {false, true, T, H, D, D, D, H}, 1.0f, x, F32, prm.wg0.get(), F32, 0.0f, gate_h, F32, "router x·W0^T");
    if (T > 0) {
      tanh_kernel<<<grid_blocks(T * H, 256), 256, 0, ctx.s()>>>(gate_h, T * H);
      launch_check("tanh_kernel");
    }
    gemm(h, {false, true, T, E, H, H, H, E}, 1.0f, gate_h, F32, prm.wg2.get(), F32, 0.0f, z, F32, "router h·W2^T");
  } else {
    gemm(h, {false, true, T, E, D, D, D, E}, 1.0f, x, F32, prm.wg.get(), F32, 0.0f, z, F32, "router x·Wg^T");
  }
  if (cfg.uses_residual())
    gemm(h, {false, true, T, E, E, E, E, E}, 1.0f, z_prev, F32, prm.gate_map.get(), F32, 1.0f, z, F32,
         "router z_prev·Wmap^T");
}

void router_select_forward(int32_t* ids, float* w, uint8_t* kept, float* s, float* p, float* sigma, float* norm,
                           const float* z, const MoeConfig& cfg, int64_t T, cudaStream_t stream) {
  check(cfg.router != RouterKind::kRelu, "router_select_forward (GPU): the relu router is not supported");
  if (T == 0) return;
  router_select_kernel<<<static_cast<unsigned>((T + 127) / 128), 128, 0, stream>>>(ids, w, kept, s, p, sigma, norm, z,
                                                                                   router_args(cfg, false), T);
  launch_check("router_select_kernel");
}

void router_backward(float* dx, float* dz_prev, GpuMoeParams& g, float* dz, float* dp, float* dgate_h,
                     const float* dw, const float* dz_out, const float* aux_dp, const int32_t* ids, const float* w,
                     const float* z, const float* gate_h, const float* p, const float* sigma, const float* norm,
                     const float* x, const float* z_prev, const GpuMoeParams& prm, const MoeConfig& cfg, int64_t T,
                     GpuContext& ctx) {
  check(cfg.zc_bias == 0.0f, "router_backward (GPU): zc_bias is for inference only (the backward does not include it)");
  check(cfg.router != RouterKind::kRelu, "router_backward (GPU): the relu router is not supported");
  const int64_t D = cfg.hidden, E = cfg.n_experts;
  if (T == 0) return;
  const bool aux = cfg.training && aux_dp != nullptr;
  router_dz_kernel<<<static_cast<unsigned>((T + 127) / 128), 128, 0, ctx.s()>>>(
      dz, dp, dw, dz_out, aux_dp, ids, w, z, p, sigma, norm, router_args(cfg, aux), T);
  launch_check("router_dz_kernel");
  cublasHandle_t h = ctx.blas.get();
  if (cfg.uses_residual()) {
    if (dz_prev)  // dz_prev += dz · Wmap
      gemm(h, {false, false, T, E, E, E, E, E}, 1.0f, dz, F32, prm.gate_map.get(), F32, 1.0f, dz_prev, F32,
           "router dz·Wmap");
    // dWmap += dz^T · z_prev
    gemm(h, {true, false, E, E, T, E, E, E}, 1.0f, dz, F32, z_prev, F32, 1.0f, g.gate_map.get(), F32,
         "router dz^T·z_prev");
  }
  if (cfg.two_layer_gate) {
    const int64_t H = cfg.gate_hidden();
    // dh = dz · W2 ; dW2 += dz^T · h ; dpre = dh * (1 - h^2) ; dW0 += dpre^T · x ; dx += dpre · W0
    gemm(h, {false, false, T, H, E, E, H, H}, 1.0f, dz, F32, prm.wg2.get(), F32, 0.0f, dgate_h, F32, "router dz·W2");
    gemm(h, {true, false, E, H, T, E, H, H}, 1.0f, dz, F32, gate_h, F32, 1.0f, g.wg2.get(), F32, "router dz^T·h");
    tanh_backward_kernel<<<grid_blocks(T * H, 256), 256, 0, ctx.s()>>>(dgate_h, gate_h, T * H);
    launch_check("tanh_backward_kernel");
    gemm(h, {true, false, H, D, T, H, D, D}, 1.0f, dgate_h, F32, x, F32, 1.0f, g.wg0.get(), F32, "router dh^T·x");
    gemm(h, {false, false, T, D, H, H, D, D}, 1.0f, dgate_h, F32, prm.wg0.get(), F32, 1.0f, dx, F32, "router dh·W0");
  } else {
    gemm(h, {true, false, E, D, T, E, D, D}, 1.0f, dz, F32, x, F32, 1.0f, g.wg.get(), F32, "router dz^T·x");
    gemm(h, {false, false, T, D, E, E, D, D}, 1.0f, dz, F32, prm.wg.get(), F32, 1.0f, dx, F32, "router dz·Wg");
  }
}

}  // namespace moepp::gpu
