// The model FLOPs of one training token of the decoder (forward + backward = 3 x forward; 2 FLOPs per
// multiply-add): the numerator of the GPU training step's MFU. Counted: the q/k/v/o projections, the
// router (and gate_map with the gating residual), the FFN experts at the FFN slots per token each block
// actually ran (MoE++ skips the zero-computation slots), the causal attention's useful products (QK^T
// and P·V over the visible keys, (T + 1) / 2 of T on average) and the lm_head. Not counted: elementwise
// work, the constant experts (4·D per slot), the masked half of the score tiles that the GPU computes
// anyway, the embedding lookup. Host code.
#pragma once

#include <cstdint>
#include <vector>

#include "model/model_config.h"

namespace moepp::gpu {

struct TrainFlops {
  double dense = 0;      // projections, router, gate_map, lm_head
  double attention = 0;  // QK^T and P·V, causal
  double experts = 0;    // FFN experts at the measured slots per token
  double total() const { return dense + attention + experts; }
};

// Per token, for sequences of T tokens; ffn_per_token [L]: FFN slots per token of each block (e.g.
// GpuModelState::ffn_experts_per_token). Throws moepp::Error when ffn_per_token has not L entries.
TrainFlops train_flops_per_token(const ModelConfig& mc, int64_t T, const std::vector<float>& ffn_per_token);

}  // namespace moepp::gpu
