// The router of an MoE++ layer: logits (one- or two-layer, plus the gating residual), scores
// (std-normalised), and each token's slots for the four variants (moepp, topk, adamoe, relu);
// and its backward from the gradient of the slot weights to x, z_prev and the router parameters.
#pragma once

#include "core/tensor.h"
#include "moe/moe_config.h"
#include "moe/moe_params.h"
#include "moe/moe_state.h"

namespace moepp {

// Outputs: st.z, st.s, st.p, st.sigma, st.gate_h, st.ids, st.w, st.norm (kept = 1 for every real slot).
// Inputs: x [T, D] (st.x), z_prev [T, E] (st.z_prev, when cfg.uses_residual()).
void router_forward(MoeForwardState& st, const MoeConfig& cfg, const MoeParams& params);

// Outputs (accumulated): dx [T, D], dz_prev [T, E] (may be null), grads of wg/wg0/wg2/gate_map.
// Inputs: dw [T, W] gradient of the slot weights; dz_out [T, E] gradient of router_logits (may be
// null); st.aux_dp / st.relu_count for the balance loss (training mode).
void router_backward(float* dx, float* dz_prev, MoeParams& grads, const float* dw, const float* dz_out,
                     const MoeForwardState& st, const MoeConfig& cfg, const MoeParams& params);

}  // namespace moepp
