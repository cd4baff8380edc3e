// MoeParams: the tensors of one MoE++ layer (router, gating residual map, FFN experts, constant
// experts), used both for the weights and for their gradients. Names follow the released checkpoint,
// relative to `model.layers.{i}.mlp.moe.` (docs/layer.md).
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "core/tensor.h"
#include "moe/moe_config.h"

namespace moepp {

// The tensors of one MoE++ layer, named once here (moe_param_specs) for everything that lists them:
// allocation, checkpoint names, loading, the inference weights.
enum class MoeParamKind { kWg, kWg0, kWg2, kGateMap, kUp, kDown, kConstWg, kConstV };

struct MoeParamSpec {
  std::string name;            // relative to model.layers.{i}.mlp.moe. (e.g. "experts.experts.3.up_proj.weight")
  std::vector<int64_t> shape;
  MoeParamKind kind;
  int64_t index = 0;           // FFN expert (kUp, kDown) or constant expert (kConstWg, kConstV), else 0
};

// Every tensor `cfg` needs, in the fixed checkpoint order: router (wg, or wg0 and wg2), gate_map (when
// the gating residual is on, also in layer 0), per FFN expert up and down, per constant expert wg and v.
std::vector<MoeParamSpec> moe_param_specs(const MoeConfig& cfg);

struct MoeParams {
  Tensor wg;        // [E, D] one-layer router (empty with the two-layer router)
  Tensor wg0, wg2;  // [8E, D], [E, 8E] two-layer router
  Tensor gate_map;  // [E, E]; allocated when the config can use the gating residual
  std::vector<Tensor> up;    // per FFN expert: [2I, D] (rows 0..I-1 gate, I..2I-1 up)
  std::vector<Tensor> down;  // per FFN expert: [D, I]
  std::vector<Tensor> const_wg;  // per constant expert: [2, D]
  std::vector<Tensor> const_v;   // per constant expert: [D]

  // Zero-filled tensors with the shapes `cfg` needs. gate_map is allocated when the gating residual
  // is on (also in layer 0, where checkpoints carry it unused).
  static MoeParams zeros(const MoeConfig& cfg);

  // The tensor a spec names; null when this MoeParams has no such expert.
  Tensor* slot(MoeParamKind kind, int64_t index);
  const Tensor* slot(MoeParamKind kind, int64_t index) const;

  // (name, tensor) for every tensor of moe_param_specs(cfg), in that order. Throws moepp::Error when
  // an expert is missing (params not shaped for cfg).
  std::vector<std::pair<std::string, Tensor*>> named(const MoeConfig& cfg);
  std::vector<std::pair<std::string, const Tensor*>> named(const MoeConfig& cfg) const;

  // Number of non-empty tensors (check_params compares it with the spec count to find extra ones).
  size_t tensor_count() const;

  void zero();
  // Initialisation of the paper: normal(0, std) for linears, v ~ normal(0, 1). Deterministic in seed.
  void init_random(const MoeConfig& cfg, uint64_t seed, float std = 0.01f);
};

}  // namespace moepp
