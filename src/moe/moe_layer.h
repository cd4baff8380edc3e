// MoeLayer: one MoE++ layer (docs/layer.md): router -> dispatch -> FFN experts (grouped GEMMs, FFN
// slots only) -> fused zero/copy/constant + weighted sum; and the backward of all of it, including the
// balance loss. The layer owns its config; weights and gradients are MoeParams passed in (llm.c style:
// outputs first, then inputs).
#pragma once

#include "core/tensor.h"
#include "moe/moe_config.h"
#include "moe/moe_params.h"
#include "moe/moe_state.h"

namespace moepp {

// Points st.x and st.x_in at the layer input x [T, D]: x_in is x itself, or K·x in st.x_scaled when
// cfg.scales_input() (the released rule: neither mixtral gating nor moe_feature_no_mul_topk). x must
// outlive every use of st. Shared by MoeLayer::forward and the decoder.
void set_expert_input(MoeForwardState& st, const float* x, int64_t T, const MoeConfig& cfg);

// The routing half of the MoE++ block, the one implementation training and inference share: sizes st
// for T tokens, sets the experts' input (set_expert_input), router logits and slots, dispatch (capacity
// in training mode) and the balance-loss statistics (the loss itself in training mode). x [T, D];
// z_prev [T, E] when cfg.uses_residual() (ignored otherwise). st points at x and z_prev afterwards.
// `params` needs the router and gate_map tensors only.
void moe_route(MoeForwardState& st, const float* x, const float* z_prev, const MoeParams& params, const MoeConfig& cfg,
               int64_t T);

class MoeLayer {
 public:
  explicit MoeLayer(MoeConfig cfg);
  const MoeConfig& config() const { return cfg_; }

  // y [T, D], z_out [T, E] (router logits for the next layer's gating residual).
  // x [T, D]; z_prev [T, E] (required when config().uses_residual(), else ignored; may be null).
  // `st` keeps what backward needs and points at x and z_prev: keep them alive until backward.
  // Training mode (config().training) also computes st.aux_loss and applies capacity.
  void forward(Tensor& y, Tensor& z_out, MoeForwardState& st, const Tensor& x, const Tensor* z_prev,
               const MoeParams& params) const;

  // dx [T, D] and dz_prev [T, E] (may be null) are overwritten; param grads are accumulated into
  // `grads` (shapes of MoeParams::zeros). dy [T, D]; dz_out [T, E] gradient of z_out (may be null).
  // The gradient includes st.aux_loss (training mode).
  void backward(Tensor& dx, Tensor* dz_prev, MoeParams& grads, MoeBackwardScratch& scratch, const Tensor& dy,
                const Tensor* dz_out, MoeForwardState& st, const MoeParams& params) const;

  // Checks that `params` has exactly the tensors and shapes this config needs; names the tensor.
  void check_params(const MoeParams& params, const std::string& source) const;

 private:
  MoeConfig cfg_;
};

}  // namespace moepp
