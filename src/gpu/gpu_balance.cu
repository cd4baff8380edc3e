// Balance-loss statistics, one block per expert (see gpu_balance.h).
#include "gpu/gpu_balance.h"

#include "core/error.h"
#include "gpu/cuda_check.h"

namespace moepp::gpu {
namespace {

constexpr int kThreads = 256;

__global__ void balance_statistics_kernel(double* stats, const int32_t* ids, const float* p, int E, int W, int64_t T) {
  __shared__ double count[kThreads], sum[kThreads];
  const int e = blockIdx.x;
  double c = 0.0, s = 0.0;
  for (int64_t i = threadIdx.x; i < T * W; i += blockDim.x) c += ids[i] == e ? 1.0 : 0.0;
  for (int64_t t = threadIdx.x; t < T; t += blockDim.x) s += p[t * E + e];
  count[threadIdx.x] = c;
  sum[threadIdx.x] = s;
  __syncthreads();
  for (int half = blockDim.x / 2; half > 0; half /= 2) {
    if (threadIdx.x < half) {
      count[threadIdx.x] += count[threadIdx.x + half];
      sum[threadIdx.x] += sum[threadIdx.x + half];
    }
    __syncthreads();
  }
  if (threadIdx.x == 0) {
    stats[e] = count[0];
    stats[E + e] = sum[0];
    if (e == 0) {
      stats[2 * E] = 0.0;
      stats[2 * E + 1] = static_cast<double>(T);
    }
  }
}

}  // namespace

void balance_statistics(double* stats, const int32_t* ids, const float* p, const MoeConfig& cfg, int64_t T,
                        cudaStream_t s) {
  check(cfg.router != RouterKind::kRelu, "balance_statistics (GPU): the relu router is not supported");
  balance_statistics_kernel<<<static_cast<unsigned>(cfg.n_experts), kThreads, 0, s>>>(
      stats, ids, p, static_cast<int>(cfg.n_experts), static_cast<int>(cfg.slot_width()), T);
  launch_check("balance_statistics_kernel");
}

}  // namespace moepp::gpu
