// The fused per-token pass of an MoE++ layer: the zero-computation experts (zero: nothing; copy: x_in;
// constant: a = softmax(Wc · x_in), a0 · x_in + a1 · v) are applied in the same sweep that adds the
// weighted FFN outputs into y. Its backward collects dx_in (FFN rows + copy + constant), the slot-weight
// gradients of zero-computation slots, and the constant experts' Wc and v gradients.
// Kernel convention: outputs first, then inputs, then settings and sizes.
#pragma once

#include <cstdint>

#include "moe/moe_config.h"
#include "moe/moe_params.h"
#include "moe/moe_state.h"

namespace moepp {

// y [T, D] (overwritten) = sum over kept slots of w · Expert(x_in). x_in [T, D] the experts' input;
// ffn_o [rows, D] the FFN rows' outputs (unweighted), row_of_slot [T * W] their rows (FfnRowsView);
// params: the constant experts.
void combine_forward(float* y, const float* x_in, const float* ffn_o, const int32_t* row_of_slot,
                     const SlotsView& slots, const MoeParams& params, const MoeConfig& cfg, int64_t T);

// dx [T, D] accumulated with the gradient of x (already times cfg.input_scale()); dw [T, W]: the
// zero-computation slots' weight gradients written (FFN slots' are ffn_experts_backward's); the constant
// experts' gradients accumulated into grads. dy [T, D]; ffn_dx [rows, D] the FFN rows' input gradients.
void combine_backward(float* dx, float* dw, MoeParams& grads, const float* dy, const float* ffn_dx,
                      const float* x_in, const int32_t* row_of_slot, const SlotsView& slots, const MoeParams& params,
                      const MoeConfig& cfg, int64_t T);

}  // namespace moepp
