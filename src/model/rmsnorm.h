// RMSNorm (LLaMA): out = x / sqrt(mean(x^2) + eps) * w, per row, in fp32; and its backward.
#pragma once

#include <cstdint>

namespace moepp {

// out [N, D], rstd [N] (1 / sqrt(mean(x^2) + eps), kept for backward); x [N, D], w [D].
void rmsnorm_forward(float* out, float* rstd, const float* x, const float* w, int64_t N, int64_t D, float eps);

// dx [N, D] and dw [D] are accumulated (+=). dout [N, D]; x [N, D]; w [D]; rstd [N] from forward.
void rmsnorm_backward(float* dx, float* dw, const float* dout, const float* x, const float* w, const float* rstd,
                      int64_t N, int64_t D);

}  // namespace moepp
