// ModelState: every activation one forward pass of the decoder keeps for its backward pass and for
// inspection (per block: norms, q/k/v, attention output and logsumexp, the MoE++ layer's state and
// router logits), the loss, the routing statistics, and the backward scratch. Buffers are reused
// across calls. N = B*T rows, row b*T + t.
#pragma once

#include <cstdint>
#include <vector>

#include "core/tensor.h"
#include "model/lm_head_ce.h"
#include "model/rope.h"
#include "moe/moe_state.h"

namespace moepp {

struct ModelState {
  // Set by the caller before forward: keep the [N, V] logits in `logits` (else they exist only a chunk
  // at a time, inside the loss).
  bool keep_logits = false;

  // Of the last forward pass.
  int64_t B = 0, T = 0, N = 0;
  bool training = false;
  std::vector<int32_t> tokens;   // [N]
  std::vector<int32_t> targets;  // [N], empty when none were given
  int64_t n_targets = 0;         // targets != -1
  int64_t batch_targets = 0;     // the whole batch's targets when it is split over processes, else 0
  float loss = 0.0f;             // mean cross-entropy (0 without targets); this shard's part of it when
                                 // the batch is split over processes (the parts sum to the mean)
  float aux_loss_sum = 0.0f;     // sum over blocks of the MoE++ aux loss (training mode)
  std::vector<float> ffn_experts_per_token;  // [L] kept FFN slots / tokens, per block

  struct Layer {
    Tensor h;            // [N, D] residual stream entering the block
    Tensor xn1;          // [N, D] input_layernorm(h)
    std::vector<float> rstd1;  // [N]
    Tensor q;            // [N, H*hd]   after RoPE
    Tensor k, v;         // [N, KVH*hd] k after RoPE
    Tensor att;          // [N, H*hd] attention output (before o_proj)
    std::vector<float> lse;  // [N, H] attention logsumexp
    Tensor h_mid;        // [N, D] h + att · wo^T
    Tensor xn2;          // [N, D] post_attention_layernorm(h_mid): the MoE++ layer's x
    std::vector<float> rstd2;  // [N]
    Tensor y;            // [N, D] MoE++ output (h_out = h_mid + y)
    Tensor z;            // [N, E] router logits (the next block's gating residual)
    MoeForwardState moe;
  };
  std::vector<Layer> layers;
  Tensor h_final;              // [N, D] residual stream after the last block
  Tensor xf;                   // [N, D] final norm output
  std::vector<float> rstd_f;   // [N]
  std::vector<float> ce_lse;   // [N] logsumexp of each row's logits (with targets)
  Tensor logits;               // [N, V] when keep_logits
  RopeTable rope;

  // Fused head backward (training forward with targets): gradient of the mean CE w.r.t. xf and lm_head.
  bool head_grad_ready = false;
  Tensor dxf;       // [N, D]
  Tensor dlm_head;  // [V, D]

  // Backward scratch.
  LmHeadScratch head_scratch;
  MoeBackwardScratch moe_scratch;
  Tensor dh, dxn, datt, dq, dk, dv, dz, dz_prev;
};

}  // namespace moepp
