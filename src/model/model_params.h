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

// The decoder's tensors, named once here (param_specs) for everything that lists them: allocation,
// checkpoint save/load, shape checks, the inference weights, the benchmarks' random weights.
enum class ParamKind { kEmbed, kAttnNorm, kWq, kWk, kWv, kWo, kMlpNorm, kMoe, kFinalNorm, kLmHead };

struct ParamSpec {
  std::string name;  // checkpoint name (spec §5)
  std::vector<int64_t> shape;
  ParamKind kind;
  int64_t layer = -1;        // block index for the per-block kinds
  MoeParamSpec moe{};        // kind == kMoe: which tensor of the block's MoE++ layer
  bool optional = false;     // layer 0's gate_map: checkpoints may omit it (it is never used)
};

// Every tensor `cfg` needs, in the fixed order: embedding, per block (input_layernorm, q, k, v, o,
// post_attention_layernorm, the MoE++ layer's tensors), final norm, lm_head.
std::vector<ParamSpec> param_specs(const ModelConfig& cfg);

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

  // The tensor a spec names; null when these params lack its block or expert.
  Tensor* slot(const ParamSpec& spec);
  const Tensor* slot(const ParamSpec& spec) const;

  // (checkpoint name, tensor) for every tensor of param_specs(cfg), in that order. Throws moepp::Error
  // when a block or expert is missing (params not shaped for cfg).
  std::vector<std::pair<std::string, Tensor*>> named(const ModelConfig& cfg);
  std::vector<std::pair<std::string, const Tensor*>> named(const ModelConfig& cfg) const;

  // Paper initialisation: norms 1, linears and embeddings normal(0, std), constant experts' v
  // normal(0, 1). Deterministic in seed.
  void init_random(const ModelConfig& cfg, uint64_t seed, float std = 0.01f);
  void zero();
  size_t numel() const;
};

}  // namespace moepp
