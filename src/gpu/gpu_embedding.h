// Token embedding on the GPU, forward and backward, with model/embedding.h's semantics. The backward's
// scatter-add has no races and no atomics: the host (which holds the token ids anyway) sorts the batch's
// positions by token id with a counting sort (EmbeddingGradPlan), and one device thread per (distinct
// token, column) adds its positions' gradient rows in ascending position order into its table row. Each
// table element is written by exactly one thread, and the sum's order is fixed, so the result is the
// same floats on every run (atomics would make it depend on the schedule).
#pragma once

#include <cstdint>
#include <vector>

#include <cuda_runtime_api.h>

namespace moepp::gpu {

// The positions of a batch grouped by token id (host side; checked here, so the kernels can trust it).
struct EmbeddingGradPlan {
  std::vector<int32_t> order;  // [N] positions, by token id, ascending position within one id
  std::vector<int32_t> token;  // [U] the distinct token ids, ascending
  std::vector<int32_t> start;  // [U + 1] order[start[u] .. start[u + 1]) are the positions of token[u]
  // The three arrays back to back (order, token, start): what embedding_backward reads on the device.
  std::vector<int32_t> packed() const;
};

// Throws moepp::Error when N is negative or above INT32_MAX, V <= 0, or an id is outside [0, V).
EmbeddingGradPlan embedding_grad_plan(const int32_t* tokens, int64_t N, int64_t V);

// out [N, D] = table[tokens[n]]. tokens [N] on the device (ids checked < V by the caller); table [V, D].
void embedding_forward(float* out, const int32_t* tokens, const float* table, int64_t N, int64_t D, cudaStream_t s);

// dtable [V, D] accumulated (+=) with the rows of dout [N, D]: packed = a plan's packed() on the device,
// with N positions and U distinct tokens.
void embedding_backward(float* dtable, const float* dout, const int32_t* packed, int64_t N, int64_t U, int64_t D,
                        cudaStream_t s);

}  // namespace moepp::gpu
