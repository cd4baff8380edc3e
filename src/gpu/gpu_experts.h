// The FFN (SwiGLU) experts on the GPU, forward and backward (the CPU's are moe/ffn_experts.h): the
// kept FFN slots' inputs gathered into rows grouped by expert, the two expert GEMMs per expert through
// grouped_gemm (per-expert cuBLAS calls or one grouped call, gpu_gemm.h), the SwiGLU between them; the
// token side of the backward (w · dy per row, the FFN slots' weight gradients) and the expert side (dA,
// dH, dX, and the experts' weight gradients in fp32, one product per expert).
//   forward:  H = X · up^T [rows, 2I];  A = silu(H[:, :I]) * H[:, I:];  O = A · down^T [rows, D]
//   backward: dO = w · dy;  dA = dO · down;  dH = [dA * u * silu'(g) | dA * silu(g)];  dX = dH · up;
//             d_up += dH^T · X;  d_down += dO^T · A;  dw = <dy, O>
// Row buffers (X, H, A, O, dO, dA, dH, dX) hold the experts' element type `tx` (F32, or BF16 with fp32
// accumulation); up / down are the weights in that type (GpuMoeParams: up, down or up_bf16, down_bf16).
// Kernel convention: outputs, then scratch, then inputs, then settings and sizes; device pointers,
// except offset_host (the row offsets [N_FFN + 1] on the host: they size the GEMMs).
#pragma once

#include <cstdint>

#include "gpu/gpu_context.h"
#include "gpu/gpu_gemm.h"
#include "gpu/gpu_params.h"
#include "moe/moe_config.h"

namespace moepp::gpu {

// xr [rows, D] = the experts' input rows: row r is x_in [T, D] row ffn_slot[r] / W, converted to tx.
void gather_rows(void* xr, const float* x_in, const int32_t* ffn_slot, ElemType tx, int64_t rows, int64_t W, int64_t D,
                 cudaStream_t stream);

// h [rows, 2I], a [rows, I] (kept for the backward) and o [rows, D] (the unweighted outputs) from xr.
void ffn_experts_forward(void* h, void* a, void* o, DeviceBuffer<const void*>& ptrs, const void* xr,
                         const int64_t* offset_host, const void* up, const void* down, ElemType tx,
                         GroupedGemmMode mode, const MoeConfig& cfg, GpuContext& ctx);

// The token side: dor [rows, D] = w[slot] · dy[slot / W] (tx) and dw[slot] = <dy[slot / W], o[r]> for
// every FFN row r (slot = ffn_slot[r]); dw's other entries are not touched.
void ffn_slot_backward(void* dor, float* dw, const float* dy, const void* o, const float* w, const int32_t* ffn_slot,
                       ElemType tx, int64_t rows, int64_t W, int64_t D, cudaStream_t stream);

// The expert side: dxr [rows, D] (the rows' input gradients, tx), and grads.up / grads.down (fp32)
// accumulated; scratch da [rows, I], dh [rows, 2I] (tx). xr, h, a: the forward's.
void ffn_experts_backward(void* dxr, GpuMoeParams& grads, void* da, void* dh, DeviceBuffer<const void*>& ptrs,
                          const void* dor, const void* xr, const void* h, const void* a, const int64_t* offset_host,
                          const void* up, const void* down, ElemType tx, GroupedGemmMode mode, const MoeConfig& cfg,
                          GpuContext& ctx);

}  // namespace moepp::gpu
