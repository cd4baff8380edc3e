// Bias-free linear layers on the GPU (model/linear.h's nn.Linear layout, W [out, in]), forward and the
// two halves of the backward, as row-major cuBLAS products. Operands are fp32, or BF16 (the caller's
// BF16 copies of both the activations and the weights) with fp32 accumulation; outputs are fp32.
#pragma once

#include <cstdint>

#include <cublas_v2.h>

#include "gpu/gpu_gemm.h"

namespace moepp::gpu {

// out [N, O] = inp [N, I] · W^T (W [O, I]); added to out when accumulate. inp and W of type t.
void linear_forward(cublasHandle_t h, float* out, const void* inp, const void* W, ElemType t, int64_t N, int64_t I,
                    int64_t O, bool accumulate = false);

// dinp [N, I] = dout [N, O] · W (added to dinp when accumulate). dout and W of type t.
void linear_backward_input(cublasHandle_t h, float* dinp, const void* dout, const void* W, ElemType t, int64_t N,
                           int64_t I, int64_t O, bool accumulate = false);

// dW [O, I] += dout^T · inp (fp32). dout [N, O] and inp [N, I] of type t.
void linear_backward_weight(cublasHandle_t h, float* dW, const void* dout, const void* inp, ElemType t, int64_t N,
                            int64_t I, int64_t O);

}  // namespace moepp::gpu
