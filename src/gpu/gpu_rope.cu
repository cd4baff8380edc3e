// RoPE rotation kernel (see gpu_rope.h): one thread per (row, head, pair).
#include "gpu/gpu_rope.h"

#include <string>

#include "core/error.h"
#include "gpu/cuda_check.h"
#include "gpu/device_math.cuh"

namespace moepp::gpu {
namespace {

__global__ void rope_kernel(float* x, const float* cos_t, const float* sin_t, int64_t N, int64_t T, int64_t nh,
                            int64_t half, float sign) {
  const int64_t total = N * nh * half;
  for (int64_t idx = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; idx < total;
       idx += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t i = idx % half, h = (idx / half) % nh, n = idx / (half * nh);
    const int64_t pos = n % T;
    float* v = x + (n * nh + h) * 2 * half;
    const float c = cos_t[pos * half + i], sn = sign * sin_t[pos * half + i];
    const float a = v[i], b = v[i + half];
    v[i] = a * c - b * sn;         // out_i        = x_i cos - x_{i+h} sin
    v[i + half] = b * c + a * sn;  // out_{i+half} = x_{i+h} cos + x_i sin
  }
}

}  // namespace

void rope_apply(float* x, const float* cos_t, const float* sin_t, int64_t B, int64_t T, int64_t n_heads, int64_t hd,
                float sign, cudaStream_t s) {
  check(B >= 0 && T >= 0 && n_heads >= 0 && hd >= 0 && hd % 2 == 0,
        "gpu rope: bad shape (B, T, heads, hd) = (" + std::to_string(B) + ", " + std::to_string(T) + ", " +
            std::to_string(n_heads) + ", " + std::to_string(hd) + ")");
  const int64_t total = B * T * n_heads * (hd / 2);
  if (total == 0) return;
  rope_kernel<<<grid_blocks(total, 256), 256, 0, s>>>(x, cos_t, sin_t, B * T, T, n_heads, hd / 2, sign);
  launch_check("rope_kernel");
}

}  // namespace moepp::gpu
