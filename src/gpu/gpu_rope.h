// Rotary position embedding on the GPU, forward and backward, with model/rope.h's convention (Hugging
// Face "rotate_half": element i of a head pairs with i + hd/2). The cos/sin table is the CPU's own
// RopeTable (built on the host, one implementation of the angles) uploaded once per shape.
#pragma once

#include <cstdint>

#include <cuda_runtime_api.h>

namespace moepp::gpu {

// In place: x [B*T, n_heads * hd] (rows b*T + t) rotated by position t; cos_t, sin_t [T, hd/2] on the
// device (RopeTable::cos / sin). sign = +1 forward; -1 the transposed rotation (the backward: the
// gradient of the output becomes that of the input). hd even.
void rope_apply(float* x, const float* cos_t, const float* sin_t, int64_t B, int64_t T, int64_t n_heads, int64_t hd,
                float sign, cudaStream_t s);

inline void rope_forward(float* x, const float* c, const float* sn, int64_t B, int64_t T, int64_t nh, int64_t hd,
                         cudaStream_t s) {
  rope_apply(x, c, sn, B, T, nh, hd, 1.0f, s);
}
inline void rope_backward(float* dx, const float* c, const float* sn, int64_t B, int64_t T, int64_t nh, int64_t hd,
                          cudaStream_t s) {
  rope_apply(dx, c, sn, B, T, nh, hd, -1.0f, s);
}

}  // namespace moepp::gpu
