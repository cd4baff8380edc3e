// Device helpers shared by the kernels of src/gpu/: element conversion between the storage types
// (float, BF16) and fp32 math, block-wide sums, the block-wide exclusive scan of flags that the
// dispatch kernels rank slots with, and launch sizes. Kernels only (included by .cu files).
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>

namespace moepp::gpu {

__device__ __forceinline__ float to_f32(float v) { return v; }
__device__ __forceinline__ float to_f32(__nv_bfloat16 v) { return __bfloat162float(v); }
template <class T>
__device__ __forceinline__ T from_f32(float v);
template <>
__device__ __forceinline__ float from_f32<float>(float v) { return v; }
template <>
__device__ __forceinline__ __nv_bfloat16 from_f32<__nv_bfloat16>(float v) { return __float2bfloat16_rn(v); }

// Sums v[0..N) over the block; every thread gets the totals. blockDim.x a multiple of 32, at most 1024;
// scratch: 32 * N floats of shared memory. Every thread of the block must call it (it synchronises).
template <int N>
__device__ void block_sum(float (&v)[N], float* scratch) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
#pragma unroll
  for (int i = 0; i < N; ++i)
    for (int o = 16; o > 0; o >>= 1) v[i] += __shfl_xor_sync(0xffffffffu, v[i], o);
  if (lane == 0)
#pragma unroll
    for (int i = 0; i < N; ++i) scratch[i * 32 + warp] = v[i];
  __syncthreads();
#pragma unroll
  for (int i = 0; i < N; ++i) {
    float s = 0.0f;
    for (int w = 0; w < warps; ++w) s += scratch[i * 32 + w];  // the same order in every thread
    v[i] = s;
  }
  __syncthreads();  // scratch may be reused after this
}

// The exclusive prefix count of `flag` over the block's threads in thread order: returns this thread's
// position among the flagged threads and sets *total to the block's count. blockDim.x a multiple of 32,
// at most 1024; scratch: 33 ints of shared memory. Every thread must call it.
__device__ inline int block_rank_flags(bool flag, int* scratch, int* total) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  const unsigned ballot = __ballot_sync(0xffffffffu, flag);
  const int in_warp = __popc(ballot & ((1u << lane) - 1u));
  if (lane == 0) scratch[warp] = __popc(ballot);
  __syncthreads();
  if (threadIdx.x == 0) {
    int acc = 0;
    for (int w = 0; w < warps; ++w) {
      const int c = scratch[w];
      scratch[w] = acc;
      acc += c;
    }
    scratch[32] = acc;
  }
  __syncthreads();
  const int pos = scratch[warp] + in_warp;
  *total = scratch[32];
  __syncthreads();
  return pos;
}

// Blocks for a grid-stride loop over n elements with `threads` threads a block.
inline unsigned grid_blocks(int64_t n, int threads) {
  return static_cast<unsigned>(std::clamp<int64_t>((n + threads - 1) / threads, 1, 65535));
}

}  // namespace moepp::gpu
