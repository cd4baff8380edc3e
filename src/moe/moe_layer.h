// MoeLayer: one MoE++ layer (docs/layer.md) on Tensors, the training model's and the tests' entry to
// the MoE block (moe_block.h): router -> dispatch -> FFN experts (grouped GEMMs, FFN slots only) ->
// fused zero/copy/constant + weighted sum; and the backward of all of it, including the balance loss. The layer owns its config; weights and gradients are MoeParams passed in (llm.c style:
// outputs first, then inputs).
#pragma once

#include "core/tensor.h"
#include "moe/moe_block.h"
#include "moe/moe_config.h"
#include "moe/moe_params.h"
#include "moe/moe_state.h"

namespace moepp {

class MoeLayer {
 public:
  explicit MoeLayer(MoeConfig cfg);
  const MoeConfig& config() const { return cfg_; }

  // y [T, D], z_out [T, E] (router logits for the next layer's gating residual).
  // x [T, D]; z_prev [T, E] (required when config().uses_residual(), else ignored; may be null).
  // `st` keeps what backward needs and points at x and z_prev: keep them alive until backward.
  // Training mode (config().training) also computes st.aux_loss and applies capacity.
  // experts: how the FFN rows run (null: LocalFfnExperts on params); batch: the processes holding the
  // rest of the batch (moe_route; null: this process holds all of it).
  void forward(Tensor& y, Tensor& z_out, MoeForwardState& st, const Tensor& x, const Tensor* z_prev,
               const MoeParams& params, FfnExecutor* experts = nullptr, Comm* batch = nullptr) const;

  // dx [T, D] and dz_prev [T, E] (may be null) are overwritten; param grads are accumulated into
  // `grads` (shapes of MoeParams::zeros). dy [T, D]; dz_out [T, E] gradient of z_out (may be null).
  // The gradient includes st.aux_loss (training mode). experts: the forward's (null: LocalFfnExperts
  // on params, accumulating into grads).
  void backward(Tensor& dx, Tensor* dz_prev, MoeParams& grads, MoeBackwardScratch& scratch, const Tensor& dy,
                const Tensor* dz_out, MoeForwardState& st, const MoeParams& params,
                FfnExecutor* experts = nullptr) const;

  // Checks that `params` has exactly the tensors and shapes this config needs; names the tensor.
  void check_params(const MoeParams& params, const std::string& source) const;

 private:
  MoeConfig cfg_;
};

}  // namespace moepp
