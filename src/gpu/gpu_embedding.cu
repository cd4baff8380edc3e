// Token embedding forward and its race-free backward on the GPU (see gpu_embedding.h).
#include "gpu/gpu_embedding.h"

#include <climits>
#include <string>

#include "core/error.h"
#include "gpu/cuda_check.h"
#include "gpu/device_math.cuh"

namespace moepp::gpu {

std::vector<int32_t> EmbeddingGradPlan::packed() const {
  std::vector<int32_t> p(order);
  p.insert(p.end(), token.begin(), token.end());
  p.insert(p.end(), start.begin(), start.end());
  return p;
}

EmbeddingGradPlan embedding_grad_plan(const int32_t* tokens, int64_t N, int64_t V) {
  check(N >= 0 && N <= INT32_MAX, "embedding_grad_plan: N = " + std::to_string(N) + " is outside [0, 2^31)");
  check(V > 0 && V <= INT32_MAX, "embedding_grad_plan: V = " + std::to_string(V) + " must be in [1, 2^31)");
  std::vector<int32_t> count(static_cast<size_t>(V) + 1, 0);
  for (int64_t n = 0; n < N; ++n) {
    check(tokens[n] >= 0 && tokens[n] < V, "embedding_grad_plan: token id " + std::to_string(tokens[n]) +
                                               " at position " + std::to_string(n) + " is outside [0, " +
                                               std::to_string(V) + ")");
    ++count[static_cast<size_t>(tokens[n]) + 1];
  }
  EmbeddingGradPlan p;
  for (int64_t v = 0; v < V; ++v) {
    if (count[v + 1] > 0) p.token.push_back(static_cast<int32_t>(v));
    count[v + 1] += count[v];  // count[v] = first slot of id v
  }
  p.order.resize(static_cast<size_t>(N));
  for (int64_t n = 0; n < N; ++n) p.order[count[tokens[n]]++] = static_cast<int32_t>(n);  // stable
  // count[v] is now the end of id v's slots; the starts of the distinct ids follow from the ends.
  p.start.push_back(0);
  for (int32_t v : p.token) p.start.push_back(count[v]);
  return p;
}

namespace {

__global__ void embedding_forward_kernel(float* out, const int32_t* tokens, const float* table, int64_t N, int64_t D) {
  const int64_t total = N * D;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t n = i / D, j = i - n * D;
    out[i] = table[static_cast<int64_t>(tokens[n]) * D + j];
  }
}

// One thread per (distinct token u, column j): dtable[token[u], j] += sum over its positions, in order.
__global__ void embedding_backward_kernel(float* dtable, const float* dout, const int32_t* order, const int32_t* token,
                                          const int32_t* start, int64_t U, int64_t D) {
  const int64_t total = U * D;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t u = i / D, j = i - u * D;
    float acc = 0.0f;
    for (int32_t q = start[u]; q < start[u + 1]; ++q) acc += dout[static_cast<int64_t>(order[q]) * D + j];
    dtable[static_cast<int64_t>(token[u]) * D + j] += acc;
  }
}

}  // namespace

void embedding_forward(float* out, const int32_t* tokens, const float* table, int64_t N, int64_t D, cudaStream_t s) {
  if (N <= 0 || D <= 0) return;
  embedding_forward_kernel<<<grid_blocks(N * D, 256), 256, 0, s>>>(out, tokens, table, N, D);
  launch_check("embedding_forward_kernel");
}

void embedding_backward(float* dtable, const float* dout, const int32_t* packed, int64_t N, int64_t U, int64_t D,
                        cudaStream_t s) {
  if (U <= 0 || D <= 0) return;
  embedding_backward_kernel<<<grid_blocks(U * D, 256), 256, 0, s>>>(dtable, dout, packed, packed + N, packed + N + U,
                                                                      U, D);
  launch_check("embedding_backward_kernel");
}

}  // namespace moepp::gpu
