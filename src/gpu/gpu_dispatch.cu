// Capacity admission and the grouping of FFN slots by expert (see gpu_dispatch.h). One block per expert
// walks the slots in order in chunks of 1024 and ranks its own with a block-wide scan of flags, so the
// order (rank-major for admission, token-major for the grouping) is the CPU layer's exactly.
#include "gpu/gpu_dispatch.h"

#include "gpu/cuda_check.h"
#include "gpu/device_math.cuh"
#include "gpu/device_memory.h"

namespace moepp::gpu {
namespace {

constexpr int kThreads = 1024;

// Block e drops the kept slots of expert e beyond capacity[e], in the order (rank k, then token t).
__global__ void capacity_admit_kernel(uint8_t* kept, unsigned long long* dropped, const int32_t* ids,
                                      const int64_t* capacity, int64_t T, int W) {
  __shared__ int scratch[33];
  const int e = blockIdx.x;
  const int64_t cap = capacity[e];
  if (cap < 0) return;  // the whole block: unlimited
  const int64_t n = T * W;
  int64_t before = 0;
  for (int64_t base = 0; base < n; base += blockDim.x) {
    const int64_t j = base + threadIdx.x;  // j = k * T + t
    int64_t slot = 0;
    bool mine = false;
    if (j < n) {
      slot = (j % T) * W + j / T;
      mine = ids[slot] == e && kept[slot];
    }
    int total = 0;
    const int pos = block_rank_flags(mine, scratch, &total);
    if (mine && before + pos >= cap) {
      kept[slot] = 0;
      atomicAdd(dropped, 1ull);
    }
    before += total;
  }
}

// Block b < n_ffn: info[b + 1] = kept slots of FFN expert b; block n_ffn: info[n_ffn + 1] = kept
// zero-computation slots.
__global__ void count_slots_kernel(int64_t* info, const int32_t* ids, const uint8_t* kept, int64_t n, int n_ffn) {
  __shared__ int scratch[33];
  const int b = blockIdx.x;
  int64_t count = 0;
  for (int64_t base = 0; base < n; base += blockDim.x) {
    const int64_t i = base + threadIdx.x;
    bool mine = false;
    if (i < n && ids[i] >= 0 && kept[i]) mine = b < n_ffn ? ids[i] == b : ids[i] >= n_ffn;
    int total = 0;
    block_rank_flags(mine, scratch, &total);
    count += total;
  }
  if (threadIdx.x == 0) info[b + 1] = count;
}

// info[0..n_ffn] = the exclusive prefix sums of the counts (info[0] = 0), keeping the zero-computation
// count beside them.
__global__ void row_offsets_kernel(int64_t* info, int n_ffn) {
  const int64_t zc = info[n_ffn + 1];
  info[0] = 0;
  for (int e = 0; e < n_ffn; ++e) info[e + 1] += info[e];
  info[n_ffn + 1] = zc;
}

// Block e writes the rows of FFN expert e, in token order: ffn_slot[row] = slot, row_of_slot[slot] = row.
__global__ void fill_rows_kernel(int32_t* ffn_slot, int32_t* row_of_slot, const int64_t* info, const int32_t* ids,
                                 const uint8_t* kept, int64_t n) {
  __shared__ int scratch[33];
  const int e = blockIdx.x;
  int64_t row = info[e];
  for (int64_t base = 0; base < n; base += blockDim.x) {
    const int64_t i = base + threadIdx.x;
    const bool mine = i < n && ids[i] == e && kept[i];
    int total = 0;
    const int pos = block_rank_flags(mine, scratch, &total);
    if (mine) {
      ffn_slot[row + pos] = static_cast<int32_t>(i);
      row_of_slot[i] = static_cast<int32_t>(row + pos);
    }
    row += total;
  }
}

}  // namespace

DispatchCounts dispatch_slots(uint8_t* kept, int64_t* info, int64_t* info_host, int32_t* ffn_slot, int32_t* row_of_slot,
                              const int32_t* ids, const int64_t* capacity, const MoeConfig& cfg, int64_t T,
                              cudaStream_t s) {
  const int W = static_cast<int>(cfg.slot_width()), NF = static_cast<int>(cfg.n_ffn());
  const int64_t n = T * W, size = dispatch_info_size(cfg);
  zero_async(info, size, s);
  if (n > 0) {
    MOEPP_CUDA(cudaMemsetAsync(row_of_slot, 0xFF, n * sizeof(int32_t), s));  // -1 everywhere
    if (capacity) {
      capacity_admit_kernel<<<static_cast<unsigned>(cfg.n_experts), kThreads, 0, s>>>(
          kept, reinterpret_cast<unsigned long long*>(info + NF + 2), ids, capacity, T, W);
      launch_check("capacity_admit_kernel");
    }
    count_slots_kernel<<<NF + 1, kThreads, 0, s>>>(info, ids, kept, n, NF);
    launch_check("count_slots_kernel");
    row_offsets_kernel<<<1, 1, 0, s>>>(info, NF);
    launch_check("row_offsets_kernel");
    fill_rows_kernel<<<NF, kThreads, 0, s>>>(ffn_slot, row_of_slot, info, ids, kept, n);
    launch_check("fill_rows_kernel");
  }
  download(info_host, info, size, s);
  DispatchCounts c;
  c.zc_slots = info_host[NF + 1];
  c.dropped_slots = info_host[NF + 2];
  return c;
}

}  // namespace moepp::gpu
