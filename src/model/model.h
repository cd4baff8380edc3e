// Model: the LLaMA-style MoE++ decoder (spec §4): embedding -> L pre-norm blocks (RMSNorm, causal
// multi-head attention with RoPE and grouped KV heads, residual; RMSNorm, MoE++ layer, residual) ->
// final RMSNorm -> lm_head, with the mean cross-entropy; and the backward of all of it. The gating
// residual chains the blocks' router logits within one pass (block i > 0 gets block i-1's). Weights,
// gradients and activations are passed in (llm.c style: outputs first, then inputs).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "model/attention.h"
#include "model/model_config.h"
#include "model/model_params.h"
#include "model/model_state.h"
#include "comm/comm.h"
#include "moe/moe_layer.h"

namespace moepp {

// How a model's passes spread over processes. batch: the processes holding the other shards of the
// batch (the batch is the shards in rank order): capacity, the balance statistics and the CE mean span
// the whole batch. experts: the expert-parallel group (moe/expert_parallel.h): each rank holds and runs
// only its FFN experts. Null: this process alone. Every rank of both must run every pass.
struct ModelParallel {
  Comm* batch = nullptr;
  Comm* experts = nullptr;
};

class Model {
 public:
  explicit Model(ModelConfig cfg);
  const ModelConfig& config() const { return cfg_; }

  // tokens, targets: [B*T] int32 row-major (target -1 = ignored; targets may be null for inference).
  // Returns the mean cross-entropy (0 if no targets). training = true turns on each block's balance
  // loss (and capacity if configured); with targets it also takes the head's gradient during the pass.
  // The B*T tokens are the MoE++ layers' T (balance statistics and capacity span the whole batch).
  float forward(ModelState& st, const int32_t* tokens, const int32_t* targets, int64_t B, int64_t T,
                const ModelParams& p, bool training) const;

  // Accumulates into grads (shapes of ModelParams::zeros) the gradient of
  // CE + sum over blocks of aux_loss, for the last forward pass held in st.
  void backward(ModelParams& grads, ModelState& st, const ModelParams& p) const;

  // Sets ReMoE's L1 coefficient (moe_relu_l1_coef, lambda >= 0) of every layer: the trainer adapts it
  // every step for the relu router. Throws Error on a negative or non-finite value.
  void set_relu_l1_coef(float lambda);

  // Spreads the passes over processes (see ModelParallel); the default is one process.
  void set_parallel(ModelParallel p) { par_ = p; }

  // Checks that p has every tensor with its shape; names `source` and the tensor.
  void check_params(const ModelParams& p, const std::string& source) const;

  // Attention tiling and backward split (tests and benchmarks change them).
  AttnBlocks attn_blocks;
  AttnBackwardMode attn_backward_mode = AttnBackwardMode::kAuto;

 private:
  ModelConfig cfg_;
  ModelParallel par_;
  std::vector<MoeLayer> infer_layers_, train_layers_;
  const MoeLayer& layer(int64_t i, bool training) const { return training ? train_layers_[i] : infer_layers_[i]; }
};

}  // namespace moepp
