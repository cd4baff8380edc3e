// Bias-free linear layer (nn.Linear layout, W [out, in]) forward and backward on top of sgemm_parallel.
#pragma once

#include <cstdint>

namespace moepp {

// out [N, O] = inp [N, I] · W^T (W [O, I]); added to out when accumulate.
void linear_forward(float* out, const float* inp, const float* W, int64_t N, int64_t I, int64_t O,
                    bool accumulate = false);

// dinp [N, I] = dout · W (added when accumulate_dinp; skipped when dinp is null);
// dW [O, I] += dout^T · inp. dout [N, O]; inp [N, I].
void linear_backward(float* dinp, float* dW, const float* dout, const float* inp, const float* W, int64_t N,
                     int64_t I, int64_t O, bool accumulate_dinp = false);

}  // namespace moepp
