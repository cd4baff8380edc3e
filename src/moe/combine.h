// The fused per-token pass of an MoE++ layer: the zero-computation experts (zero: nothing; copy: x_in;
// constant: a = softmax(Wc · x_in), a0 · x_in + a1 · v) are applied in the same sweep that adds the
// weighted FFN outputs into y. Its backward collects dx_in (FFN rows + copy + constant), the slot-weight
// gradients of zero-computation slots, and the constant experts' Wc and v gradients.
#pragma once

#include "moe/moe_config.h"
#include "moe/moe_params.h"
#include "moe/moe_state.h"

namespace moepp {

// Output: y [T, D]. Inputs: st (slots, FFN outputs, x_in), params (constant experts).
void combine_forward(float* y, const MoeForwardState& st, const MoeConfig& cfg, const MoeParams& params);

// Outputs: dx [T, D] (accumulated, already scaled by K when experts see K·x), scratch.dw for
// zero-computation slots, grads of the constant experts (accumulated).
// Inputs: dy [T, D], scratch.ffn_dx (from ffn_experts_backward), st, params.
void combine_backward(float* dx, MoeBackwardScratch& scratch, MoeParams& grads, const float* dy,
                      const MoeForwardState& st, const MoeConfig& cfg, const MoeParams& params);

}  // namespace moepp
