// Fused zero/copy/constant experts and the weighted sum of the slots, forward and backward (see
// gpu_combine.h). One block of kThreads threads per token; the constant experts' dot products are
// block-wide sums; per-slot factors live in shared memory (3 K floats).
#include "gpu/gpu_combine.h"

#include "gpu/cuda_check.h"
#include "gpu/device_math.cuh"

namespace moepp::gpu {
namespace {

constexpr int kThreads = 256;

struct CombineArgs {
  int64_t D;
  int W;
  int first_constant, first_copy, first_zero;  // expert layout: [0, first_constant) FFN
  int n_constant;
  float in_scale;
};

CombineArgs combine_args(const MoeConfig& cfg) {
  return {cfg.hidden,
          static_cast<int>(cfg.slot_width()),
          static_cast<int>(cfg.first_constant()),
          static_cast<int>(cfg.first_copy()),
          static_cast<int>(cfg.first_zero()),
          static_cast<int>(cfg.n_constant),
          cfg.input_scale()};
}

template <class To>
__global__ void combine_forward_kernel(float* y, const float* x_in, const To* ffn_o, const int32_t* row_of_slot,
                                       const int32_t* ids, const float* w, const uint8_t* kept, const float* const_wg,
                                       const float* const_v, CombineArgs a) {
  extern __shared__ float gate[];  // [2 W]: a0, a1 of each constant slot
  __shared__ float scratch[64];
  const int64_t t = blockIdx.x, D = a.D;
  const float* xt = x_in + t * D;
  for (int k = 0; k < a.W; ++k) {  // every thread sees the same slot: the branch is uniform
    const int64_t slot = t * a.W + k;
    const int e = ids[slot];
    if (e < a.first_constant || e >= a.first_copy || !kept[slot]) continue;
    const float* wc = const_wg + static_cast<int64_t>(e - a.first_constant) * 2 * D;
    float l[2] = {0.0f, 0.0f};
    for (int64_t j = threadIdx.x; j < D; j += blockDim.x) {
      l[0] += wc[j] * xt[j];
      l[1] += wc[D + j] * xt[j];
    }
    block_sum(l, scratch);
    if (threadIdx.x == 0) {
      const float m = fmaxf(l[0], l[1]);
      const float e0 = expf(l[0] - m), e1 = expf(l[1] - m);
      gate[2 * k] = e0 / (e0 + e1);
      gate[2 * k + 1] = e1 / (e0 + e1);
    }
  }
  __syncthreads();
  for (int64_t j = threadIdx.x; j < D; j += blockDim.x) {
    float acc = 0.0f;
    for (int k = 0; k < a.W; ++k) {
      const int64_t slot = t * a.W + k;
      const int e = ids[slot];
      if (e < 0 || !kept[slot] || e >= a.first_zero) continue;
      const float ws = w[slot];
      if (e < a.first_constant) {
        acc += ws * to_f32(ffn_o[static_cast<int64_t>(row_of_slot[slot]) * D + j]);
      } else if (e < a.first_copy) {
        const float* v = const_v + static_cast<int64_t>(e - a.first_constant) * D;
        acc += ws * (gate[2 * k] * xt[j] + gate[2 * k + 1] * v[j]);
      } else {
        acc += ws * xt[j];
      }
    }
    y[t * D + j] = acc;
  }
}

template <class Tdx>
__global__ void combine_backward_kernel(float* dx, float* dw, float* coef_x, float* coef_dy, const float* dy,
                                        const Tdx* ffn_dx, const float* x_in, const int32_t* row_of_slot,
                                        const int32_t* ids, const float* w, const uint8_t* kept,
                                        const float* const_wg, const float* const_v, CombineArgs a) {
  extern __shared__ float f[];  // [3 W]: per slot, the factor of dy, of Wc row 0 and of Wc row 1 in dx_in
  __shared__ float scratch[128];
  const int64_t t = blockIdx.x, D = a.D;
  const float* xt = x_in + t * D;
  const float* dyt = dy + t * D;
  for (int k = 0; k < a.W; ++k) {  // uniform branches, as in the forward
    const int64_t slot = t * a.W + k;
    const int e = ids[slot];
    if (e < a.first_constant || !kept[slot]) continue;  // FFN slots and dropped slots: nothing here
    if (e >= a.first_zero) {
      if (threadIdx.x == 0) dw[slot] = 0.0f;
      continue;
    }
    const float ws = w[slot];
    if (e >= a.first_copy) {  // copy: d x_in += w dy; dw = <dy, x_in>
      float d[1] = {0.0f};
      for (int64_t j = threadIdx.x; j < D; j += blockDim.x) d[0] += dyt[j] * xt[j];
      block_sum(d, scratch);
      if (threadIdx.x == 0) {
        dw[slot] = d[0];
        f[3 * k] = ws, f[3 * k + 1] = 0.0f, f[3 * k + 2] = 0.0f;
      }
      continue;
    }
    const int c = e - a.first_constant;
    const float* wc = const_wg + static_cast<int64_t>(c) * 2 * D;
    const float* v = const_v + static_cast<int64_t>(c) * D;
    float d[4] = {0.0f, 0.0f, 0.0f, 0.0f};  // <Wc0, x>, <Wc1, x>, <dy, x>, <dy, v>
    for (int64_t j = threadIdx.x; j < D; j += blockDim.x) {
      d[0] += wc[j] * xt[j];
      d[1] += wc[D + j] * xt[j];
      d[2] += dyt[j] * xt[j];
      d[3] += dyt[j] * v[j];
    }
    block_sum(d, scratch);
    if (threadIdx.x == 0) {
      const float m = fmaxf(d[0], d[1]);
      const float e0 = expf(d[0] - m), e1 = expf(d[1] - m);
      const float a0 = e0 / (e0 + e1), a1 = e1 / (e0 + e1);
      dw[slot] = a0 * d[2] + a1 * d[3];  // <dy, a0 x + a1 v>
      const float da0 = ws * d[2], da1 = ws * d[3];
      const float dot = a0 * da0 + a1 * da1;
      const float dl0 = a0 * (da0 - dot), dl1 = a1 * (da1 - dot);
      f[3 * k] = a0 * ws, f[3 * k + 1] = dl0, f[3 * k + 2] = dl1;
      coef_x[t * 2 * a.n_constant + 2 * c] += dl0;  // d Wc = dl ⊗ x_in, d v = a1 w dy (products below)
      coef_x[t * 2 * a.n_constant + 2 * c + 1] += dl1;
      coef_dy[t * a.n_constant + c] += a1 * ws;
    }
  }
  __syncthreads();
  for (int64_t j = threadIdx.x; j < D; j += blockDim.x) {
    float acc = 0.0f;
    for (int k = 0; k < a.W; ++k) {
      const int64_t slot = t * a.W + k;
      const int e = ids[slot];
      if (e < 0 || !kept[slot] || e >= a.first_zero) continue;
      if (e < a.first_constant) {
        acc += to_f32(ffn_dx[static_cast<int64_t>(row_of_slot[slot]) * D + j]);
      } else if (e < a.first_copy) {
        const float* wc = const_wg + static_cast<int64_t>(e - a.first_constant) * 2 * D;
        acc += f[3 * k] * dyt[j] + f[3 * k + 1] * wc[j] + f[3 * k + 2] * wc[D + j];
      } else {
        acc += f[3 * k] * dyt[j];
      }
    }
    dx[t * D + j] += a.in_scale * acc;
  }
}

}  // namespace

void combine_forward(float* y, const float* x_in, const void* ffn_o, ElemType to, const int32_t* row_of_slot,
                     const int32_t* ids, const float* w, const uint8_t* kept, const GpuMoeParams& prm,
                     const MoeConfig& cfg, int64_t T, cudaStream_t s) {
  if (T == 0) return;
  const CombineArgs a = combine_args(cfg);
  const size_t shared = 2 * static_cast<size_t>(a.W) * sizeof(float);
  if (to == ElemType::kF32)
    combine_forward_kernel<float><<<static_cast<unsigned>(T), kThreads, shared, s>>>(
        y, x_in, static_cast<const float*>(ffn_o), row_of_slot, ids, w, kept, prm.const_wg.get(), prm.const_v.get(), a);
  else
    combine_forward_kernel<__nv_bfloat16><<<static_cast<unsigned>(T), kThreads, shared, s>>>(
        y, x_in, static_cast<const __nv_bfloat16*>(ffn_o), row_of_slot, ids, w, kept, prm.const_wg.get(),
        prm.const_v.get(), a);
  launch_check("combine_forward_kernel");
}

void combine_backward(float* dx, float* dw, GpuMoeParams& g, float* coef_x, float* coef_dy, const float* dy,
                      const void* ffn_dx, ElemType tdx, const float* x_in, const int32_t* row_of_slot,
                      const int32_t* ids, const float* w, const uint8_t* kept, const GpuMoeParams& prm,
                      const MoeConfig& cfg, int64_t T, GpuContext& ctx) {
  if (T == 0) return;
  const CombineArgs a = combine_args(cfg);
  const int64_t D = cfg.hidden, NC = cfg.n_constant;
  zero_async(coef_x, T * 2 * NC, ctx.s());
  zero_async(coef_dy, T * NC, ctx.s());
  const size_t shared = 3 * static_cast<size_t>(a.W) * sizeof(float);
  if (tdx == ElemType::kF32)
    combine_backward_kernel<float><<<static_cast<unsigned>(T), kThreads, shared, ctx.s()>>>(
        dx, dw, coef_x, coef_dy, dy, static_cast<const float*>(ffn_dx), x_in, row_of_slot, ids, w, kept,
        prm.const_wg.get(), prm.const_v.get(), a);
  else
    combine_backward_kernel<__nv_bfloat16><<<static_cast<unsigned>(T), kThreads, shared, ctx.s()>>>(
        dx, dw, coef_x, coef_dy, dy, static_cast<const __nv_bfloat16*>(ffn_dx), x_in, row_of_slot, ids, w, kept,
        prm.const_wg.get(), prm.const_v.get(), a);
  launch_check("combine_backward_kernel");
  if (NC == 0) return;
  constexpr ElemType F32 = ElemType::kF32;
  // d Wc [2 N_C, D] += coef_x^T · x_in ;  d v [N_C, D] += coef_dy^T · dy
  gemm(ctx.blas.get(), {true, false, 2 * NC, D, T, 2 * NC, D, D}, 1.0f, coef_x, F32, x_in, F32, 1.0f, g.const_wg.get(),
       F32, "constant experts coef^T·x_in");
  gemm(ctx.blas.get(), {true, false, NC, D, T, NC, D, D}, 1.0f, coef_dy, F32, dy, F32, 1.0f, g.const_v.get(), F32,
       "constant experts coef^T·dy");
}

}  // namespace moepp::gpu
