// The layer benchmarks' shared setup (moepp bench layer, moepp bench ep, and the GPU benchmark of
// bench/gpu/): the paper's layer shapes, the vanilla and MoE++ layer configs of a shape, and the
// bisection of the router bias that sends a chosen fraction of the slots to FFN experts (a constant
// input feature x[:, 0] = 1 and a bisected weight on it for the zero-computation experts). Pure: the
// routing itself (CPU: cpu_router_bias.h; GPU: bench/gpu/gpu_layer_bench.cpp) is the caller's.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "moe/moe_config.h"

namespace moepp {

struct ShapeCase {
  std::string name;
  int64_t d, i, n_ffn, n_zero, n_copy, n_const;
};

// 768x2048-8+4, 768x2048-16+4, 768x2048-32+8, 1536x4096-16+4.
const std::vector<ShapeCase>& all_shapes();
// The shapes a comma list names ("all" = every one); throws moepp::Error naming `who` on an unknown one.
std::vector<ShapeCase> shapes_named(const std::string& list, const std::string& who);
// Comma list of FFN slot fractions in (0, 1]; throws moepp::Error naming `who`.
std::vector<double> fractions_named(const std::string& list, const std::string& who);

// Layer 0 (no gating residual), the 7B checkpoint's router flags; moepp: with the shape's
// zero-computation experts, else a vanilla top-2 MoE of the same FFN experts.
MoeConfig make_config(const ShapeCase& s, bool moepp);

// The bias b (bisection over [-100, 100], 40 steps) at which fraction_at(b), the share of slots on FFN
// experts with bias b on the zero-computation experts (falling in b), is `target`; -100 for target 1.
float bisect_bias(const std::function<double(float)>& fraction_at, double target);

}  // namespace moepp
