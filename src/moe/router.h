// The router of an MoE++ layer: logits (one- or two-layer, plus the gating residual), scores
// (std-normalised), and each token's slots for the four variants (moepp, topk, adamoe, relu);
// and its backward from the gradient of the slot weights to x, z_prev and the router parameters.
// Kernels take outputs first, then inputs, then settings and sizes (cfg, T); every buffer is the
// caller's, sized as stated. Thread-safe for distinct outputs; they use the OpenMP threads.
#pragma once

#include <cstdint>

#include "moe/moe_config.h"
#include "moe/moe_params.h"
#include "moe/moe_state.h"

namespace moepp {

// z [T, E] = x · Wg^T (one-layer router), or tanh(x · W0^T) · W2^T with the tanh hidden kept in
// gate_h [T, 8E] (two-layer router; gate_h is unused, may be null, otherwise); plus z_prev · Wmap^T
// when cfg.uses_residual() (z_prev [T, E], ignored otherwise). x [T, D].
void router_logits_forward(float* z, float* gate_h, const float* x, const float* z_prev, const MoeParams& params,
                           const MoeConfig& cfg, int64_t T);

// The slots of T tokens from their logits z [T, E] (docs/layer.md, "Router"). Writes every entry of
// ids, w, kept [T, W] (W = cfg.slot_width(); padding: id -1, weight 0, kept 0; every real slot kept 1).
// Not for relu: s, p [T, E], sigma [T] (0 without logits norm) and norm [T] (0 with mixtral gating).
// For relu, s, p, sigma and norm are not touched and may be null.
void router_select_forward(int32_t* ids, float* w, uint8_t* kept, float* s, float* p, float* sigma, float* norm,
                           const float* z, const MoeConfig& cfg, int64_t T);

// Accumulates into dx [T, D], dz_prev [T, E] (may be null; only with cfg.uses_residual()) and the router
// gradients in `grads` (wg or wg0/wg2, gate_map). dw [T, W] gradient of the slot weights; dz_out [T, E]
// gradient of the logits as a layer output (may be null); aux_dp [E] d aux_loss / d p_te (may be null:
// no balance loss); relu_count [E] (relu router in training, else may be null); act and slots from the
// forward; x [T, D], z_prev [T, E] the forward's inputs.
void router_backward(float* dx, float* dz_prev, MoeParams& grads, const float* dw, const float* dz_out,
                     const float* aux_dp, const float* relu_count, const RouterActivations& act,
                     const SlotsView& slots, const float* x, const float* z_prev, const MoeParams& params,
                     const MoeConfig& cfg, int64_t T);

}  // namespace moepp
