// ModelParams: every tensor of the decoder (embedding, per-block norms, attention projections and
// MoE++ layer, final norm, lm_head), used both for the weights and for their gradients. Names are the
// checkpoint names of spec §5 (model.embed_tokens.weight, model.layers.{i}...., lm_head.weight).
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "core/tensor.h"
#include "model/model_config.h"
#include "moe/moe_params.h"

namespace moepp {

struct ModelParams {
  Tensor embed;  // [V, D]
  struct Layer {
    Tensor attn_norm;  // [D]        input_layernorm
    Tensor wq;         // [H*hd, D]
    Tensor wk;         // [KVH*hd, D]
    Tensor wv;         // [KVH*hd, D]
    Tensor wo;         // [D, H*hd]
    Tensor mlp_norm;   // [D]        post_attention_layernorm
    MoeParams moe;     // mlp.moe.*
  };
  std::vector<Layer> layers;
  Tensor final_norm;  // [D]
  Tensor lm_head;     // [V, D]

  // Zero-filled tensors with the shapes `cfg` needs (layer 0 gets a gate_map when the gating residual
  // is on, as checkpoints carry it, unused).
  static ModelParams zeros(const ModelConfig& cfg);

  // (checkpoint name, tensor) for every tensor, in a fixed order (embedding, blocks, norm, lm_head).
  std::vector<std::pair<std::string, Tensor*>> named(const ModelConfig& cfg);
  std::vector<std::pair<std::string, const Tensor*>> named(const ModelConfig& cfg) const;

  // Paper initialisation: norms 1, linears and embeddings normal(0, std), constant experts' v
  // normal(0, 1). Deterministic in seed.
  void init_random(const ModelConfig& cfg, uint64_t seed, float std = 0.01f);
  void zero();
  size_t numel() const;
};

}  // namespace moepp
