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

  // (name, tensor) for every tensor, in a fixed order.
  std::vector<std::pair<std::string, Tensor*>> named(const MoeConfig& cfg);
  std::vector<std::pair<std::string, const Tensor*>> named(const MoeConfig& cfg) const;

  void zero();
  // Initialisation of the paper: normal(0, std) for linears, v ~ normal(0, 1). Deterministic in seed.
  void init_random(const MoeConfig& cfg, uint64_t seed, float std = 0.01f);
};

}  // namespace moepp
