// Tiny models shared by the unit tests of the model, its config and its checkpoints (header-only): a
// two-layer MoE++ (or top-k) decoder small enough to train and check in milliseconds.
#pragma once

#include <cstdint>
#include <string>

#include <nlohmann/json.hpp>

#include "model/model_config.h"
#include "model/model_params.h"

namespace moepp::test {

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
