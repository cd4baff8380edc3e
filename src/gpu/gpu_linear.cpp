// Linear layers as row-major cuBLAS products (see gpu_linear.h).
#include "gpu/gpu_linear.h"

namespace moepp::gpu {

void linear_forward(cublasHandle_t h, float* out, const void* inp, const void* W, ElemType t, int64_t N, int64_t I,
                    int64_t O, bool accumulate) {
  gemm(h, {false, true, N, O, I, I, I, O}, 1.0f, inp, t, W, t, accumulate ? 1.0f : 0.0f, out, ElemType::kF32,
       "linear forward");
}

void linear_backward_input(cublasHandle_t h, float* dinp, const void* dout, const void* W, ElemType t, int64_t N,
                           int64_t I, int64_t O, bool accumulate) {
  gemm(h, {false, false, N, I, O, O, I, I}, 1.0f, dout, t, W, t, accumulate ? 1.0f : 0.0f, dinp, ElemType::kF32,
       "linear backward (input)");
}

void linear_backward_weight(cublasHandle_t h, float* dW, const void* dout, const void* inp, ElemType t, int64_t N,
                            int64_t I, int64_t O) {
  gemm(h, {true, false, O, I, N, O, I, I}, 1.0f, dout, t, inp, t, 1.0f, dW, ElemType::kF32, "linear backward (weight)");
}

}  // namespace moepp::gpu
