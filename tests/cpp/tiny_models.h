// Tiny models shared by unit tests (header-only): one MoE layer's config (the MoE layer, MoE config and
// dispatch tests) and a two-layer MoE++ (or top-k) decoder (the model, model config and checkpoint
// tests), small enough to train and check in milliseconds.
#pragma once

#include <cstdint>
#include <string>

#include <nlohmann/json.hpp>

#include "model/model_config.h"
#include "model/model_params.h"
#include "moe/moe_config.h"

namespace moepp::test {

// One layer of width 12 with 4 FFN experts of width 10 and, for the MoE++ router, 4 zero-computation
// experts (1 zero, 1 copy, 2 constant; AdaMoE: 1 zero): layer 1 in training, with the 7B checkpoint's
// router flags and both auxiliary losses on.
inline MoeConfig small_moe_config(RouterKind r) {
  MoeConfig c;
  c.hidden = 12;
  c.intermediate = 10;
  c.router = r;
  c.n_zero = r == RouterKind::kMoepp || r == RouterKind::kAdaMoe ? 1 : 0;
  c.n_copy = r == RouterKind::kMoepp ? 1 : 0;
  c.n_constant = r == RouterKind::kMoepp ? 2 : 0;
  c.n_experts = 4 + c.n_zc();
  c.gating_residual = r == RouterKind::kMoepp;
  c.layer_index = 1;
  c.training = true;
  c.aux_loss_coef = 0.1f;
  c.relu_l1_coef = 0.05f;
  c.two_layer_gate = false;  // the 7B checkpoint's router flags
  c.logits_norm = true;
  c.no_mul_topk = true;
  return c;
}

// The config.json of a two-layer decoder (vocabulary 31, width 16, 8 experts of which 4 are
// zero-computation ones for "moepp"; 4 FFN experts for "topk").
inline nlohmann::json tiny_config_json(const std::string& router = "moepp") {
  nlohmann::json j = {{"vocab_size", 31},         {"hidden_size", 16},         {"intermediate_size", 24},
                      {"num_hidden_layers", 2},   {"num_attention_heads", 4},  {"num_key_value_heads", 2},
                      {"max_position_embeddings", 64}, {"num_experts", {8}},   {"moe_router", router}};
  if (router == "topk") j["num_experts"] = {4};
  return j;
}

inline ModelConfig tiny_config(const std::string& router = "moepp") {
  return ModelConfig::from_json(tiny_config_json(router), "tiny");
}

// Random parameters (std 0.2: router weights large enough that routing varies between tokens).
inline ModelParams tiny_params(const ModelConfig& c, uint64_t seed) {
  ModelParams p = ModelParams::zeros(c);
  p.init_random(c, seed, 0.2f);
  return p;
}

}  // namespace moepp::test
