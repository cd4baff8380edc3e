// The output head: logits = xf · lm_head^T over the vocabulary and the mean cross-entropy over the
// targets != -1 (stable log-softmax), computed a chunk of rows at a time so that the [N, V] logits never
// need to exist at once. Backward either runs fused into the forward pass (when the caller will train,
// the chunk's gradient is taken while its logits are at hand) or recomputes each chunk's logits from the
// saved per-row logsumexp.
#pragma once

#include <cstdint>
#include <vector>

namespace moepp {

struct LmHeadScratch {
  std::vector<float> chunk;  // [rows, V] logits / their gradient
};

// Rows per chunk for vocabulary V (about 4 Mi floats of logits, at least 16 rows).
int64_t lm_head_chunk_rows(int64_t N, int64_t V);

// Returns the mean CE over rows with targets[n] != -1 (0 when there are none or targets is null).
// Outputs: logits [N, V] (may be null), lse [N] (logsumexp of each row's logits; written when targets
// are given), and, when dxf is not null, the fused backward: dxf [N, D] overwritten, dW [V, D]
// accumulated (+=) with the gradient of the mean CE.
// Inputs: xf [N, D] (final-norm output), W [V, D] (lm_head), targets [N] (values in [-1, V), may be null).
// mean_over: the number of targets the mean is taken over when these N rows are a shard of a batch
// split over processes (the batch's count; each shard then returns its part of the batch's mean and
// the gradient of that part); <= 0: these rows' own count.
float lm_head_ce_forward(float* logits, float* lse, float* dxf, float* dW, LmHeadScratch& sc, const float* xf,
                         const float* W, const int32_t* targets, int64_t N, int64_t D, int64_t V,
                         int64_t mean_over = 0);

// The backward without the fused pass: dxf [N, D] overwritten, dW [V, D] accumulated (+=), recomputing
// each chunk's logits. xf, W, targets as in forward; lse [N] from forward.
void lm_head_ce_backward(float* dxf, float* dW, LmHeadScratch& sc, const float* xf, const float* W,
                         const int32_t* targets, const float* lse, int64_t N, int64_t D, int64_t V,
                         int64_t mean_over = 0);

}  // namespace moepp
