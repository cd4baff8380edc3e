// Tests of src/gpu/train_flops (host): the training FLOPs of a small config counted by hand.
#include "gpu/train_flops.h"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "core/error.h"

namespace moepp::gpu {
namespace {

TEST(TrainFlops, CountsEveryProductOfASmallModel) {
  const nlohmann::json j = {{"vocab_size", 64},          {"hidden_size", 32},         {"intermediate_size", 24},
                            {"num_hidden_layers", 2},    {"num_attention_heads", 4},  {"num_key_value_heads", 2},
                            {"max_position_embeddings", 32}, {"num_experts", {8}},   {"n_zero_experts", 1},
                            {"n_copy_experts", 1},       {"n_constant_experts", 2},   {"moe_2layer_gate", false},
                            {"moe_gating_residual", true}};
  const ModelConfig mc = ModelConfig::from_json(j, "t");
  const TrainFlops f = train_flops_per_token(mc, 13, {1.5f, 0.5f});
  // Per block: q, k, v, o 2·32·(32 + 2·16) + 2·32·32 = 6144; router 2·32·8 = 512; gate_map 2·8·8 = 128 in
  // block 1 only (block 0 has no previous logits); lm_head 2·32·64 = 4096. Times 3 (forward + backward).
  EXPECT_DOUBLE_EQ(f.dense, 3.0 * (2 * (6144 + 512) + 128 + 4096));
  // Causal attention, T = 13: 2 products · 2·Q · (T + 1) / 2 per block.
  EXPECT_DOUBLE_EQ(f.attention, 3.0 * 2 * (2 * 2 * 32 * 14 / 2));
  // Experts: 6·D·I = 4608 per FFN slot, 1.5 + 0.5 slots.
  EXPECT_DOUBLE_EQ(f.experts, 3.0 * 4608 * 2.0);
  EXPECT_DOUBLE_EQ(f.total(), f.dense + f.attention + f.experts);
  EXPECT_THROW(train_flops_per_token(mc, 13, {1.0f}), Error);
}

}  // namespace
}  // namespace moepp::gpu
