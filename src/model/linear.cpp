// Linear forward/backward (see linear.h).
#include "model/linear.h"

#include "core/gemm.h"

namespace moepp {

void linear_forward(float* out, const float* inp, const float* W, int64_t N, int64_t I, int64_t O, bool accumulate) {
  sgemm_parallel(false, true, N, O, I, 1.0f, inp, I, W, I, accumulate ? 1.0f : 0.0f, out, O);
}

void linear_backward(float* dinp, float* dW, const float* dout, const float* inp, const float* W, int64_t N,
                     int64_t I, int64_t O, bool accumulate_dinp) {
  if (dinp) sgemm_parallel(false, false, N, I, O, 1.0f, dout, O, W, I, accumulate_dinp ? 1.0f : 0.0f, dinp, I);
  sgemm_parallel(true, false, O, I, N, 1.0f, dout, O, inp, I, 1.0f, dW, I);
}

}  // namespace moepp
