// ModelConfig: the shape of a LLaMA-style MoE++ decoder (vocabulary, width, depth, attention heads,
// RoPE, RMSNorm) plus the MoE++ layer template used by every block, read from and written to a
// Hugging Face style config.json (spec §5 keys plus the extension keys of docs/layer.md).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "moe/moe_config.h"

namespace moepp {

// Sanity limits (docs/limits.md), far above the released 7B model (24 layers, context 2048, about
// 7.5e9 weights), so that a config.json with absurd dimensions is rejected before anything is
// allocated. The layer's own limits are MoeConfig's (moe/moe_config.h).
inline constexpr int64_t kMaxLayers = 1024;                  // num_hidden_layers
inline constexpr int64_t kMaxPositions = 131072;             // max_position_embeddings
inline constexpr int64_t kMaxModelWeights = int64_t{1} << 35;  // about 3.4e10 (see weight_bound())

struct ModelConfig {
  int64_t vocab = 0;       // V
  int64_t hidden = 0;      // D
  int64_t n_layers = 0;    // L
  int64_t n_heads = 0;     // H
  int64_t n_kv_heads = 0;  // KVH (divides H)
  int64_t head_dim = 0;    // hd = D / H (even: RoPE pairs i and i + hd/2)
  int64_t max_pos = 2048;  // max_position_embeddings: longest sequence T
  float rms_eps = 1e-6f;
  float rope_theta = 1e4f;
  int32_t bos = 1, eos = 2, pad = 0;
  MoeConfig moe;  // layer template: layer i uses a copy with layer_index = i

  // The MoE++ config of block i (layer_index = i, training mode as given).
  MoeConfig layer_moe(int i, bool training) const;

  // Parses and validates a config.json; errors name `source` and the field.
  static ModelConfig from_json(const nlohmann::json& j, const std::string& source);
  // A complete config.json that from_json reads back to the same config.
  nlohmann::json to_json() const;
  void validate(const std::string& source) const;
  // An upper bound on the number of weights: 2 V D (embedding, LM head) + L (4 D^2 (attention) +
  // 3 D I x FFN experts + E D (router)). Meaningful (no overflow) once the dimensions are within
  // their limits; validate() checks it against kMaxModelWeights.
  int64_t weight_bound() const;
  // The config.json keys whose values differ between this config and `other`, each as
  // "key (A vs B)" with the two values as to_json writes them; empty when they are the same model.
  std::vector<std::string> differences(const ModelConfig& other) const;

  // Sets the inference-only bias toward the zero-computation experts (MoeConfig::zc_bias; --zc-bias).
  // Throws moepp::Error for a non-finite value, |b| > 100, or a non-zero b on a model without
  // zero-computation experts or with the relu router.
  void set_zc_bias(float b);
};

}  // namespace moepp
