// RMSNorm on the GPU, forward and backward, with model/rmsnorm.h's semantics (fp32): out = x · r · w,
// r = 1 / sqrt(mean(x^2) + eps) per row. One block per row for the row passes; the weight gradient is
// summed over row chunks into a scratch buffer and then over the chunks in a fixed order (no atomics:
// the same floats on every run).
#pragma once

#include <cstdint>

#include <cuda_runtime_api.h>

namespace moepp::gpu {

// out [N, D], rstd [N]; x [N, D], w [D]. N and D in [0, 2^31).
void rmsnorm_forward(float* out, float* rstd, const float* x, const float* w, int64_t N, int64_t D, float eps,
                     cudaStream_t s);

// Floats of scratch rmsnorm_backward needs for width D.
int64_t rmsnorm_backward_scratch(int64_t D);

// dx [N, D] and dw [D] accumulated (+=); scratch [rmsnorm_backward_scratch(D)]; dout [N, D], x [N, D],
// w [D], rstd [N] from forward.
void rmsnorm_backward(float* dx, float* dw, float* scratch, const float* dout, const float* x, const float* w,
                      const float* rstd, int64_t N, int64_t D, cudaStream_t s);

}  // namespace moepp::gpu
