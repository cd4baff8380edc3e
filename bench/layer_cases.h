// The layer benchmarks' shared setup (moepp bench layer, moepp bench ep): the paper's layer shapes, the
// vanilla and MoE++ layer configs of a shape, and the router bias that sends a chosen fraction of the
// slots to FFN experts (a constant input feature x[:, 0] = 1 and a bisected weight on it for the
// zero-computation experts).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/tensor.h"
#include "moe/moe_config.h"
#include "moe/moe_params.h"

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

// Fraction of slots that reach FFN experts with bias b on the zero-computation experts (sets it in p).
double ffn_fraction(const MoeConfig& c, MoeParams& p, const Tensor& x, float b);
// The bias (bisection) whose fraction is closest to `target` for these tokens.
float bias_for_fraction(const MoeConfig& c, MoeParams& p, const Tensor& x, double target);

}  // namespace moepp
