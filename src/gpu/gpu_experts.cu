// Gather, SwiGLU and the grouped expert GEMMs, forward and backward (see gpu_experts.h).
#include "gpu/gpu_experts.h"

#include "gpu/cuda_check.h"
#include "gpu/device_math.cuh"

namespace moepp::gpu {
namespace {

// p advanced by `elems` elements of type t.
const void* at(const void* p, int64_t elems, ElemType t) {
  return static_cast<const char*>(p) + elems * static_cast<int64_t>(elem_size(t));
}
void* at(void* p, int64_t elems, ElemType t) { return static_cast<char*>(p) + elems * static_cast<int64_t>(elem_size(t)); }

template <class Tx>
__global__ void gather_rows_kernel(Tx* xr, const float* x_in, const int32_t* ffn_slot, int64_t W, int64_t D) {
  const int64_t r = blockIdx.x;
  const float* src = x_in + (ffn_slot[r] / W) * D;
  Tx* dst = xr + r * D;
  for (int64_t j = threadIdx.x; j < D; j += blockDim.x) dst[j] = from_f32<Tx>(src[j]);
}

template <class Tx>
__global__ void swiglu_forward_kernel(Tx* a, const Tx* h, int64_t rows, int64_t I) {
  const int64_t n = rows * I;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t r = i / I, j = i - r * I;
    const float g = to_f32(h[r * 2 * I + j]), u = to_f32(h[r * 2 * I + I + j]);
    a[i] = from_f32<Tx>(g * (1.0f / (1.0f + expf(-g))) * u);
  }
}

template <class Tx>
__global__ void swiglu_backward_kernel(Tx* dh, const Tx* da, const Tx* h, int64_t rows, int64_t I) {
  const int64_t n = rows * I;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t r = i / I, j = i - r * I;
    const float g = to_f32(h[r * 2 * I + j]), u = to_f32(h[r * 2 * I + I + j]), d = to_f32(da[i]);
    const float sg = 1.0f / (1.0f + expf(-g));
    dh[r * 2 * I + I + j] = from_f32<Tx>(d * g * sg);                        // du
    dh[r * 2 * I + j] = from_f32<Tx>(d * u * sg * (1.0f + g * (1.0f - sg)));  // dg
  }
}

template <class Tx>
__global__ void ffn_slot_backward_kernel(Tx* dor, float* dw, const float* dy, const Tx* o, const float* w,
                                         const int32_t* ffn_slot, int64_t W, int64_t D) {
  __shared__ float scratch[32];
  const int64_t r = blockIdx.x;
  const int32_t s = ffn_slot[r];
  const float* dyt = dy + (s / W) * D;
  const float ws = w[s];
  float dot[1] = {0.0f};
  for (int64_t j = threadIdx.x; j < D; j += blockDim.x) {
    dor[r * D + j] = from_f32<Tx>(ws * dyt[j]);
    dot[0] += dyt[j] * to_f32(o[r * D + j]);
  }
  block_sum(dot, scratch);
  if (threadIdx.x == 0) dw[s] = dot[0];
}

template <class Tx>
void launch_gather(void* xr, const float* x_in, const int32_t* ffn_slot, int64_t rows, int64_t W, int64_t D,
                   cudaStream_t s) {
  gather_rows_kernel<Tx><<<static_cast<unsigned>(rows), 256, 0, s>>>(static_cast<Tx*>(xr), x_in, ffn_slot, W, D);
  launch_check("gather_rows_kernel");
}

template <class Tx>
void launch_swiglu_forward(void* a, const void* h, int64_t rows, int64_t I, cudaStream_t s) {
  swiglu_forward_kernel<Tx><<<grid_blocks(rows * I, 256), 256, 0, s>>>(static_cast<Tx*>(a), static_cast<const Tx*>(h),
                                                                      rows, I);
  launch_check("swiglu_forward_kernel");
}

template <class Tx>
void launch_swiglu_backward(void* dh, const void* da, const void* h, int64_t rows, int64_t I, cudaStream_t s) {
  swiglu_backward_kernel<Tx><<<grid_blocks(rows * I, 256), 256, 0, s>>>(
      static_cast<Tx*>(dh), static_cast<const Tx*>(da), static_cast<const Tx*>(h), rows, I);
  launch_check("swiglu_backward_kernel");
}

template <class Tx>
void launch_slot_backward(void* dor, float* dw, const float* dy, const void* o, const float* w, const int32_t* ffn_slot,
                          int64_t rows, int64_t W, int64_t D, cudaStream_t s) {
  ffn_slot_backward_kernel<Tx><<<static_cast<unsigned>(rows), 256, 0, s>>>(
      static_cast<Tx*>(dor), dw, dy, static_cast<const Tx*>(o), w, ffn_slot, W, D);
  launch_check("ffn_slot_backward_kernel");
}

}  // namespace

void gather_rows(void* xr, const float* x_in, const int32_t* ffn_slot, ElemType tx, int64_t rows, int64_t W, int64_t D,
                 cudaStream_t s) {
  if (rows == 0) return;
  if (tx == ElemType::kF32) launch_gather<float>(xr, x_in, ffn_slot, rows, W, D, s);
  else launch_gather<__nv_bfloat16>(xr, x_in, ffn_slot, rows, W, D, s);
}

void ffn_experts_forward(void* h, void* a, void* o, DeviceBuffer<const void*>& ptrs, const void* xr,
                         const int64_t* offset_host, const void* up, const void* down, ElemType tx,
                         GroupedGemmMode mode, const MoeConfig& cfg, GpuContext& ctx) {
  const int64_t D = cfg.hidden, I = cfg.intermediate, NF = cfg.n_ffn(), rows = offset_host[NF];
  if (rows == 0) return;
  // H_e = X_e · up_e^T   ([m, D] · [D, 2I])
  const auto up_problems = expert_problems(offset_host, NF, [&](int64_t e, int64_t r0, int64_t m) {
    return GroupedProblem{m, 2 * I, D, at(xr, r0 * D, tx), at(up, e * 2 * I * D, tx), at(h, r0 * 2 * I, tx), D, D, 2 * I};
  });
  grouped_gemm(mode, ctx.blas.get(), ctx.s(), ptrs, false, true, 1.0f, 0.0f, up_problems, tx, tx, tx, "expert X·up^T");
  if (tx == ElemType::kF32) launch_swiglu_forward<float>(a, h, rows, I, ctx.s());
  else launch_swiglu_forward<__nv_bfloat16>(a, h, rows, I, ctx.s());
  // O_e = A_e · down_e^T   ([m, I] · [I, D])
  const auto down_problems = expert_problems(offset_host, NF, [&](int64_t e, int64_t r0, int64_t m) {
    return GroupedProblem{m, D, I, at(a, r0 * I, tx), at(down, e * D * I, tx), at(o, r0 * D, tx), I, I, D};
  });
  grouped_gemm(mode, ctx.blas.get(), ctx.s(), ptrs, false, true, 1.0f, 0.0f, down_problems, tx, tx, tx,
               "expert A·down^T");
}

void ffn_slot_backward(void* dor, float* dw, const float* dy, const void* o, const float* w, const int32_t* ffn_slot,
                       ElemType tx, int64_t rows, int64_t W, int64_t D, cudaStream_t s) {
  if (rows == 0) return;
  if (tx == ElemType::kF32) launch_slot_backward<float>(dor, dw, dy, o, w, ffn_slot, rows, W, D, s);
  else launch_slot_backward<__nv_bfloat16>(dor, dw, dy, o, w, ffn_slot, rows, W, D, s);
}

void ffn_experts_backward(void* dxr, GpuMoeParams& g, void* da, void* dh, DeviceBuffer<const void*>& ptrs,
                          const void* dor, const void* xr, const void* h, const void* a, const int64_t* offset_host,
                          const void* up, const void* down, ElemType tx, GroupedGemmMode mode, const MoeConfig& cfg,
                          GpuContext& ctx) {
  const int64_t D = cfg.hidden, I = cfg.intermediate, NF = cfg.n_ffn(), rows = offset_host[NF];
  if (rows == 0) return;
  cublasHandle_t hb = ctx.blas.get();
  constexpr ElemType F32 = ElemType::kF32;
  // dA_e = dO_e · down_e   ([m, D] · [D, I])
  const auto da_problems = expert_problems(offset_host, NF, [&](int64_t e, int64_t r0, int64_t m) {
    return GroupedProblem{m, I, D, at(dor, r0 * D, tx), at(down, e * D * I, tx), at(da, r0 * I, tx), D, I, I};
  });
  grouped_gemm(mode, hb, ctx.s(), ptrs, false, false, 1.0f, 0.0f, da_problems, tx, tx, tx, "expert dO·down");
  if (tx == ElemType::kF32) launch_swiglu_backward<float>(dh, da, h, rows, I, ctx.s());
  else launch_swiglu_backward<__nv_bfloat16>(dh, da, h, rows, I, ctx.s());
  // dX_e = dH_e · up_e   ([m, 2I] · [2I, D])
  const auto dx_problems = expert_problems(offset_host, NF, [&](int64_t e, int64_t r0, int64_t m) {
    return GroupedProblem{m, D, 2 * I, at(dh, r0 * 2 * I, tx), at(up, e * 2 * I * D, tx), at(dxr, r0 * D, tx), 2 * I, D, D};
  });
  grouped_gemm(mode, hb, ctx.s(), ptrs, false, false, 1.0f, 0.0f, dx_problems, tx, tx, tx, "expert dH·up");
  // Weight gradients in fp32, one product per expert (mixed types: no grouped form in cuBLAS).
  // d_up_e += dH_e^T · X_e   ([2I, m] · [m, D]);  d_down_e += dO_e^T · A_e   ([D, m] · [m, I])
  const auto gup_problems = expert_problems(offset_host, NF, [&](int64_t e, int64_t r0, int64_t m) {
    return GroupedProblem{2 * I, D, m, at(dh, r0 * 2 * I, tx), at(xr, r0 * D, tx), g.up.get() + e * 2 * I * D, 2 * I, D, D};
  });
  grouped_gemm(GroupedGemmMode::kPerProduct, hb, ctx.s(), ptrs, true, false, 1.0f, 1.0f, gup_problems, tx, tx, F32,
               "expert dH^T·X");
  const auto gdown_problems = expert_problems(offset_host, NF, [&](int64_t e, int64_t r0, int64_t m) {
    return GroupedProblem{D, I, m, at(dor, r0 * D, tx), at(a, r0 * I, tx), g.down.get() + e * D * I, D, I, I};
  });
  grouped_gemm(GroupedGemmMode::kPerProduct, hb, ctx.s(), ptrs, true, false, 1.0f, 1.0f, gdown_problems, tx, tx, F32,
               "expert dO^T·A");
}

}  // namespace moepp::gpu
