// MoeForwardState: the owner of the buffers of one forward pass of an MoE++ layer, kept for its
// backward pass and for inspection: router logits and scores, each token's slots (expert id, weight,
// kept flag), the FFN slots grouped by expert with their activations, and the balance-loss statistics.
// Buffers are reused across calls (no reallocation when T does not grow). The kernels (router.h,
// dispatch.h, ffn_experts.h, combine.h, balance_loss.h) never see this struct: they take the buffers
// explicitly; the read-only views below group the ones that travel together.
#pragma once

#include <cstdint>
#include <vector>

#include "core/tensor.h"
#include "moe/moe_config.h"

namespace moepp {

// T tokens' slots, [T, width] row-major: expert id (-1 = padding), routing weight, 1 if the slot
// reaches its expert.
struct SlotsView {
  const int32_t* ids = nullptr;
  const float* w = nullptr;
  const uint8_t* kept = nullptr;
  int64_t width = 0;
};

// The kept FFN slots grouped by expert: rows [offset[e], offset[e+1]) belong to FFN expert e (offset has
// N_FFN + 1 entries); slot[r] is the slot (t * width + k) of row r; row_of_slot[slot] is the row of an
// FFN slot, -1 for every other slot.
struct FfnRowsView {
  const int64_t* offset = nullptr;
  const int32_t* slot = nullptr;
  const int32_t* row_of_slot = nullptr;
};

// What the router's forward computed, as its backward needs it (router.h).
struct RouterActivations {
  const float* z = nullptr;       // [T, E] logits
  const float* gate_h = nullptr;  // [T, 8E] tanh hidden (two-layer router), else null
  const float* p = nullptr;       // [T, E] softmax(s) (not relu)
  const float* sigma = nullptr;   // [T] std of z (logits norm)
  const float* norm = nullptr;    // [T] renormalisation sums (moepp / topk / adamoe without mixtral)
};

// What an expert-parallel block exchanged (expert_parallel.h), kept for its backward and counted for
// the measurements: rows per peer, the received rows grouped by this rank's experts, their activations.
struct ExpertExchange {
  std::vector<int64_t> send_rows, recv_rows;  // [group size] rows to / from each peer
  std::vector<int64_t> recv_offset;           // [group size + 1] start of each peer's rows in recv order
  std::vector<int64_t> local_offset;          // [experts of this rank + 1] rows of each, expert-major
  std::vector<int64_t> perm;                  // [received rows] expert-major row -> its row in recv order
  Tensor x_local, h_local, a_local;           // [received rows, D / 2I / I] owner-side inputs, activations
  Tensor buf_a, buf_b;                        // exchange buffers
  // Counters of the last forward and backward (rows to / from other ranks; bytes = rows * D * 4).
  int64_t fwd_rows_out = 0, fwd_rows_in = 0, bwd_rows_out = 0, bwd_rows_in = 0;
  double fwd_comm_s = 0.0, bwd_comm_s = 0.0;
};

struct MoeForwardState {
  int64_t T = 0;  // tokens
  int64_t W = 0;  // slot width per token: K, or E for the ReLU router

  // Inputs as seen by the experts: x itself, or K·x (MoeConfig::scales_input(); set_expert_input).
  const float* x = nullptr;       // [T, D] the caller's x; must outlive backward
  const float* z_prev = nullptr;  // [T, E] or null
  Tensor x_scaled;                // [T, D] K·x when used
  const float* x_in = nullptr;    // x or x_scaled

  // Router.
  Tensor gate_h;              // [T, 8E] tanh hidden of the two-layer router
  Tensor z;                   // [T, E] router logits (the layer's router_logits output)
  Tensor s;                   // [T, E] normalised scores (not for relu)
  Tensor p;                   // [T, E] softmax(s) (not for relu)
  std::vector<float> sigma;   // [T] std of z per token (logits norm)

  // Slots, [T, W] row-major. ids -1 = padding (ReLU router).
  std::vector<int32_t> ids;
  std::vector<float> w;       // routing weight (before capacity)
  std::vector<uint8_t> kept;  // 1 if the slot reaches its expert
  std::vector<float> norm;    // [T] renormalisation denominator sum(q) (moepp, topk, adamoe)

  // FFN slots grouped by expert: rows [ffn_offset[e], ffn_offset[e+1]) belong to FFN expert e.
  std::vector<int64_t> ffn_offset;   // [N_FFN + 1]
  std::vector<int32_t> ffn_slot;     // [T * W] capacity; [rows] used: the slot (t * W + k) of each row
  std::vector<int32_t> row_of_slot;  // [T * W] row of an FFN slot, -1 otherwise
  Tensor ffn_h;                      // [rows, 2I] x_in · up^T (gate | up)
  Tensor ffn_a;                      // [rows, I]  silu(g) * u
  Tensor ffn_o;                      // [rows, D]  expert output (unweighted)

  // Expert-parallel executors only; mutable: the backward reuses its buffers as scratch.
  mutable ExpertExchange ep;

  // Balance loss (training mode).
  std::vector<float> select_frac;  // [E] fraction of tokens selecting each expert (f_i)
  std::vector<float> aux_dp;       // [E] d aux_loss / d p_te (the same for every token)
  std::vector<float> relu_count;   // [E] tokens with R_te > 0 (relu router)
  float aux_loss = 0.0f;

  // Sizes every buffer whose size T and cfg fix (logits, scores, slots, grouping); FFN activations
  // are sized once the row count is known.
  void resize(const MoeConfig& cfg, int64_t tokens);
  SlotsView slots() const { return {ids.data(), w.data(), kept.data(), W}; }
  FfnRowsView rows() const { return {ffn_offset.data(), ffn_slot.data(), row_of_slot.data()}; }
  RouterActivations router() const {
    return {z.ptr(), gate_h.empty() ? nullptr : gate_h.ptr(), p.ptr(), sigma.data(), norm.data()};
  }

  // Counters of this pass.
  int64_t ffn_rows() const { return ffn_offset.empty() ? 0 : ffn_offset.back(); }
  int64_t zc_slots = 0;       // kept slots on zero-computation experts
  int64_t dropped_slots = 0;  // slots dropped by capacity
  float relu_sparsity = 0.0f; // fraction of R_te == 0 (relu router)
};

}  // namespace moepp

namespace moepp {

// Scratch of the backward pass, reused across calls.
struct MoeBackwardScratch {
  Tensor ffn_x;   // [rows, D] gathered expert inputs
  Tensor ffn_do;  // [rows, D] gradient of the expert outputs (w · dy)
  Tensor ffn_dh;  // [rows, 2I] gradient of x_in · up^T
  Tensor ffn_dx;  // [rows, D] gradient of the gathered inputs
  std::vector<float> dw;  // [T, W] gradient of the slot weights
};

}  // namespace moepp
