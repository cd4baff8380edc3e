// The CPU side of the layer benchmarks' router steering (layer_cases.h): the share of slots that the
// CPU router (moe/router.h) sends to FFN experts under a bias on the zero-computation experts, and the
// bias for a target share.
#pragma once

#include "core/tensor.h"
#include "layer_cases.h"
#include "moe/moe_config.h"
#include "moe/moe_params.h"

namespace moepp {

// Fraction of slots that reach FFN experts with bias b on the zero-computation experts (sets it in p).
double ffn_fraction(const MoeConfig& c, MoeParams& p, const Tensor& x, float b);
// The bias (bisect_bias) whose fraction is closest to `target` for these tokens.
float bias_for_fraction(const MoeConfig& c, MoeParams& p, const Tensor& x, double target);

}  // namespace moepp
