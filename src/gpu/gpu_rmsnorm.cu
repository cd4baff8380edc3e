// RMSNorm forward and backward kernels (see gpu_rmsnorm.h).
#include "gpu/gpu_rmsnorm.h"

#include <climits>
#include <string>

#include "core/error.h"
#include "gpu/cuda_check.h"
#include "gpu/device_math.cuh"

namespace moepp::gpu {
namespace {

constexpr int kThreads = 256;
constexpr int kDwChunks = 64;  // row chunks of the weight gradient's first pass

__global__ void rmsnorm_forward_kernel(float* out, float* rstd, const float* x, const float* w, int64_t D, float eps) {
  __shared__ float scratch[32];
  const int64_t n = blockIdx.x;
  const float* xr = x + n * D;
  float ss[1] = {0.0f};
  for (int64_t j = threadIdx.x; j < D; j += blockDim.x) ss[0] += xr[j] * xr[j];
  block_sum(ss, scratch);
  const float r = 1.0f / sqrtf(ss[0] / static_cast<float>(D) + eps);
  if (threadIdx.x == 0) rstd[n] = r;
  float* o = out + n * D;
  for (int64_t j = threadIdx.x; j < D; j += blockDim.x) o[j] = (xr[j] * r) * w[j];
}

// dx[j] += r w_j dy_j - r^3 / D x_j sum_k(w_k dy_k x_k), one block per row.
__global__ void rmsnorm_dx_kernel(float* dx, const float* dout, const float* x, const float* w, const float* rstd,
                                  int64_t D) {
  __shared__ float scratch[32];
  const int64_t n = blockIdx.x;
  const float* xr = x + n * D;
  const float* dy = dout + n * D;
  float dot[1] = {0.0f};
  for (int64_t j = threadIdx.x; j < D; j += blockDim.x) dot[0] += w[j] * dy[j] * xr[j];
  block_sum(dot, scratch);
  const float r = rstd[n];
  const float c = r * r * r * dot[0] / static_cast<float>(D);
  float* d = dx + n * D;
  for (int64_t j = threadIdx.x; j < D; j += blockDim.x) d[j] += r * w[j] * dy[j] - c * xr[j];
}

// part[c, j] = sum over rows n of chunk c of dy[n, j] x[n, j] r[n]; grid (column tiles of 32, chunks),
// block (32 columns, 8 row lanes).
__global__ void rmsnorm_dw_partial_kernel(float* part, const float* dout, const float* x, const float* rstd,
                                          int64_t N, int64_t D) {
  __shared__ float acc[8][33];
  const int64_t j = blockIdx.x * 32 + threadIdx.x;
  const int64_t rows_per_chunk = (N + gridDim.y - 1) / gridDim.y;
  const int64_t n0 = blockIdx.y * rows_per_chunk, n1 = min(N, n0 + rows_per_chunk);
  float s = 0.0f;
  if (j < D)
    for (int64_t n = n0 + threadIdx.y; n < n1; n += 8) s += dout[n * D + j] * x[n * D + j] * rstd[n];
  acc[threadIdx.y][threadIdx.x] = s;
  __syncthreads();
  if (threadIdx.y == 0 && j < D) {
    float t = 0.0f;
    for (int y = 0; y < 8; ++y) t += acc[y][threadIdx.x];
    part[static_cast<int64_t>(blockIdx.y) * D + j] = t;
  }
}

__global__ void rmsnorm_dw_sum_kernel(float* dw, const float* part, int chunks, int64_t D) {
  for (int64_t j = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; j < D;
       j += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    float t = 0.0f;
    for (int c = 0; c < chunks; ++c) t += part[c * D + j];
    dw[j] += t;
  }
}

void check_sizes(int64_t N, int64_t D, const char* what) {
  check(N >= 0 && N <= INT_MAX && D >= 0 && D <= INT_MAX,
        std::string(what) + ": N = " + std::to_string(N) + ", D = " + std::to_string(D) + " outside [0, 2^31)");
}

}  // namespace

void rmsnorm_forward(float* out, float* rstd, const float* x, const float* w, int64_t N, int64_t D, float eps,
                     cudaStream_t s) {
  check_sizes(N, D, "gpu rmsnorm_forward");
  if (N == 0 || D == 0) return;
  rmsnorm_forward_kernel<<<static_cast<unsigned>(N), kThreads, 0, s>>>(out, rstd, x, w, D, eps);
  launch_check("rmsnorm_forward_kernel");
}

int64_t rmsnorm_backward_scratch(int64_t D) { return kDwChunks * D; }

void rmsnorm_backward(float* dx, float* dw, float* scratch, const float* dout, const float* x, const float* w,
                      const float* rstd, int64_t N, int64_t D, cudaStream_t s) {
  check_sizes(N, D, "gpu rmsnorm_backward");
  if (N == 0 || D == 0) return;
  rmsnorm_dx_kernel<<<static_cast<unsigned>(N), kThreads, 0, s>>>(dx, dout, x, w, rstd, D);
  launch_check("rmsnorm_dx_kernel");
  const dim3 grid(static_cast<unsigned>((D + 31) / 32), kDwChunks), block(32, 8);
  rmsnorm_dw_partial_kernel<<<grid, block, 0, s>>>(scratch, dout, x, rstd, N, D);
  launch_check("rmsnorm_dw_partial_kernel");
  rmsnorm_dw_sum_kernel<<<grid_blocks(D, kThreads), kThreads, 0, s>>>(dw, scratch, kDwChunks, D);
  launch_check("rmsnorm_dw_sum_kernel");
}

}  // namespace moepp::gpu
