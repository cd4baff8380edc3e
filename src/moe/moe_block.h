// The MoE++ block, one implementation for training and inference: routing (expert input, router
// logits and slots, dispatch with capacity, balance-loss statistics), the FFN rows through a pluggable
// FfnExecutor (ffn_executor.h), and the fused combine with the zero-computation experts; and its
// backward. MoeLayer (training, tests) and the inference decoder both run it. Zero-computation slots
// and the gating residual never leave the process; only the executor may communicate.
#pragma once

#include <cstdint>

#include "comm/comm.h"
#include "moe/ffn_executor.h"
#include "moe/moe_config.h"
#include "moe/moe_params.h"
#include "moe/moe_state.h"

namespace moepp {

// Points st.x and st.x_in at the block input x [T, D]: x_in is x itself, or K·x in st.x_scaled when
// cfg.scales_input() (the released rule: neither mixtral gating nor moe_feature_no_mul_topk). x must
// outlive every use of st.
void set_expert_input(MoeForwardState& st, const float* x, int64_t T, const MoeConfig& cfg);

// The routing half: sizes st for T tokens, sets the experts' input, router logits and slots, dispatch
// (capacity in training mode) and the balance-loss statistics (the loss itself in training mode).
// x [T, D]; z_prev [T, E] when cfg.uses_residual() (ignored otherwise); st points at both afterwards.
// `params` needs the router and gate_map tensors only. batch: the processes that hold the rest of the
// batch (this process's tokens are its shard; the batch is the shards in rank order): capacity
// admission and the balance loss are then those of the whole batch, exchanging W·E + 2E + 2 numbers.
// null = this process holds the whole batch. Every rank of `batch` must call it.
void moe_route(MoeForwardState& st, const float* x, const float* z_prev, const MoeParams& params, const MoeConfig& cfg,
               int64_t T, Comm* batch = nullptr);

// y [T, D] (overwritten): the block's output for the tokens routed in st (moe_route first). The FFN
// rows go through `experts`; params: the constant experts.
void moe_block_combine(float* y, MoeForwardState& st, FfnExecutor& experts, const MoeParams& params,
                       const MoeConfig& cfg);

// The backward of route + combine: dx [T, D] and dz_prev [T, E] (may be null) are accumulated into (the
// caller zeroes them); the router's and constant experts' gradients are accumulated into grads, the FFN
// experts' by `experts`. dy [T, D]; dz_out [T, E] the gradient of the router logits as a block output
// (may be null). The balance loss's gradient is included in training mode.
void moe_block_backward(float* dx, float* dz_prev, MoeParams& grads, MoeBackwardScratch& sc, const float* dy,
                        const float* dz_out, const MoeForwardState& st, FfnExecutor& experts, const MoeParams& params,
                        const MoeConfig& cfg);

}  // namespace moepp
