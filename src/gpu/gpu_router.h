// The router of the MoE++ layer on the GPU (docs/layer.md, "Router"; the CPU's is moe/router.h), forward
// and backward: logits (cuBLAS: one- or two-layer router, plus the gating residual), scores (std
// normalisation, softmax over all experts), each token's top-k slots with the zero-expert rule or
// mixtral gating; the backward from the slot weights' gradients through the softmax, the std
// normalisation and the logits to x, z_prev and the router's weights. Not for the relu router
// (gpu_support.h). Kernel convention: outputs, then scratch, then inputs, then settings and sizes; all
// pointers are device pointers; everything is queued on ctx's stream (or `stream`).
#pragma once

#include <cstdint>

#include "gpu/gpu_context.h"
#include "gpu/gpu_params.h"
#include "moe/moe_config.h"

namespace moepp::gpu {

// z [T, E] = x · Wg^T (one-layer), or tanh(x · W0^T) · W2^T with the tanh hidden in gate_h [T, 8E]
// (two-layer; gate_h unused otherwise); plus z_prev · Wmap^T when cfg.uses_residual(). x [T, D].
void router_logits_forward(float* z, float* gate_h, const float* x, const float* z_prev, const GpuMoeParams& prm,
                           const MoeConfig& cfg, int64_t T, GpuContext& ctx);

// Every slot of T tokens from their logits z [T, E]: ids, w, kept [T, K] (kept all 1: capacity is the
// dispatch's), s, p [T, E], sigma [T] (0 without logits norm), norm [T] (0 with mixtral gating).
void router_select_forward(int32_t* ids, float* w, uint8_t* kept, float* s, float* p, float* sigma, float* norm,
                           const float* z, const MoeConfig& cfg, int64_t T, cudaStream_t stream);

// The router's backward. Accumulates into dx [T, D], dz_prev [T, E] (may be null; with
// cfg.uses_residual() only) and grads' wg or wg0/wg2 and gate_map. Scratch: dz, dp [T, E], dgate_h
// [T, 8E] (two-layer router; else may be null). dw [T, K] the slot weights' gradients; dz_out [T, E]
// the logits' gradient as a layer output (may be null); aux_dp [E] d aux_loss / d p_te (may be null: no
// balance loss). The rest: the forward's slots and activations, and its inputs x [T, D], z_prev [T, E].
void router_backward(float* dx, float* dz_prev, GpuMoeParams& grads, float* dz, float* dp, float* dgate_h,
                     const float* dw, const float* dz_out, const float* aux_dp, const int32_t* ids, const float* w,
                     const float* z, const float* gate_h, const float* p, const float* sigma, const float* norm,
                     const float* x, const float* z_prev, const GpuMoeParams& prm, const MoeConfig& cfg, int64_t T,
                     GpuContext& ctx);

}  // namespace moepp::gpu
