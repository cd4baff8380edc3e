// The fused per-token pass of the MoE++ layer on the GPU (the CPU's is moe/combine.h), forward and
// backward: the zero-computation experts (zero: nothing; copy: x_in; constant: a = softmax(Wc · x_in),
// a0 · x_in + a1 · v) applied in the same sweep that adds the weighted FFN rows into y; its backward
// collects dx (FFN rows + copy + constant, times the input scale), the zero-computation slots' weight
// gradients, and the constant experts' Wc and v gradients (per-token coefficients, then two cuBLAS
// products over the tokens). One block per token. Kernel convention: outputs, then scratch, then
// inputs, then settings and sizes; device pointers.
#pragma once

#include <cstdint>

#include "gpu/gpu_context.h"
#include "gpu/gpu_gemm.h"
#include "gpu/gpu_params.h"
#include "moe/moe_config.h"

namespace moepp::gpu {

// y [T, D] (overwritten) = sum over kept slots of w · Expert(x_in). x_in [T, D]; ffn_o [rows, D] the FFN
// rows' outputs in type `to`; row_of_slot [T * K]; ids, w, kept [T, K]; prm: the constant experts.
void combine_forward(float* y, const float* x_in, const void* ffn_o, ElemType to, const int32_t* row_of_slot,
                     const int32_t* ids, const float* w, const uint8_t* kept, const GpuMoeParams& prm,
                     const MoeConfig& cfg, int64_t T, cudaStream_t stream);

// dx [T, D] accumulated with cfg.input_scale() · d x_in; dw [T, K]: the zero-computation slots' weight
// gradients written (the FFN slots' are ffn_slot_backward's); grads.const_wg / const_v accumulated.
// Scratch: coef_x [T, 2 N_C], coef_dy [T, N_C]. dy [T, D]; ffn_dx [rows, D] the FFN rows' input
// gradients in type `tdx`; the rest as in combine_forward.
void combine_backward(float* dx, float* dw, GpuMoeParams& grads, float* coef_x, float* coef_dy, const float* dy,
                      const void* ffn_dx, ElemType tdx, const float* x_in, const int32_t* row_of_slot,
                      const int32_t* ids, const float* w, const uint8_t* kept, const GpuMoeParams& prm,
                      const MoeConfig& cfg, int64_t T, GpuContext& ctx);

}  // namespace moepp::gpu
