// GpuModel: the whole MoE++ decoder of model/model.h on the GPU, forward and backward, with the CPU
// model's order of steps and semantics: embedding -> L pre-norm blocks (RMSNorm, q/k/v projections,
// RoPE, causal attention with grouped KV heads, o projection + residual; RMSNorm, the MoE++ layer on
// GpuMoeLayer, residual; the gating residual chains block l-1's router logits into block l) -> final
// RMSNorm -> lm_head with the mean cross-entropy (fused with its gradient in a training pass); the
// backward of all of it, each block's balance loss included.
//
// Precision (GpuModelOptions): kF32 is fp32 everywhere (cuBLAS without TF32). kBF16 runs the big
// products with BF16 operands and fp32 accumulation: the q/k/v/o projections, the lm_head (logits and
// both gradient products) and the FFN experts (GpuMoeLayer's BF16 mode); their inputs are rounded to
// BF16 right before each product, from fp32 activations. Everything else stays fp32: the attention
// (scores, softmax, P·V), RMSNorm, RoPE, the router and combine, the residual stream, every gradient
// buffer and the master weights.
//
// The model owns its config and its per-block GpuMoeLayers; weights, gradients and the state are the
// caller's (all device buffers; the token ids come from the host). Everything runs on the context's
// stream; a forward waits for the device a few times (the MoE layers' row offsets and statistics, the
// loss). One thread at a time per state and context. Not supported (errors): the relu router (as in
// GpuMoeLayer), processes beyond one (no ModelParallel), and a backward without a training forward
// pass.
#pragma once

#include <cstdint>
#include <vector>

#include <cuda_bf16.h>

#include "gpu/device_memory.h"
#include "gpu/gpu_attention.h"
#include "gpu/gpu_context.h"
#include "gpu/gpu_lm_head_ce.h"
#include "gpu/gpu_model_params.h"
#include "gpu/gpu_moe_layer.h"
#include "model/model_config.h"
#include "model/rope.h"

namespace moepp::gpu {

struct GpuModelOptions {
  Precision precision = Precision::kF32;
  GroupedGemmMode gemm = GroupedGemmMode::kPerProduct;
};

// Every activation one forward pass keeps for its backward, the loss and routing statistics, and the
// scratch of both passes; buffers grow on demand and are reused across calls. N = B*T rows, row b*T + t.
struct GpuModelState {
  // Of the last forward pass.
  int64_t B = 0, T = 0, N = 0;
  bool training = false;
  std::vector<int32_t> tokens, targets;  // host copies [N] (targets empty when none were given)
  int64_t n_targets = 0;
  float loss = 0.0f;          // mean cross-entropy (0 without targets)
  float aux_loss_sum = 0.0f;  // sum over blocks of the MoE++ aux loss (training)
  std::vector<float> ffn_experts_per_token;  // [L]

  struct Layer {
    DeviceBuffer<float> h, xn1, rstd1;  // [N, D], [N, D], [N]
    DeviceBuffer<float> q, k, v;        // [N, H*hd], [N, KVH*hd] x2 (q, k after RoPE)
    DeviceBuffer<float> att, lse;       // [N, H*hd], [N, H]
    DeviceBuffer<float> h_mid, xn2, rstd2, y;  // [N, D] x2, [N], [N, D]
    GpuMoeState moe;                    // its z is the block's router logits [N, E]
  };
  std::vector<Layer> layers;
  DeviceBuffer<float> h_final, xf, rstd_f, ce_lse;  // [N, D], [N, D], [N], [N]
  DeviceBuffer<int32_t> d_tokens, d_targets, d_embed_plan;
  RopeTable rope;                       // the CPU's table, uploaded to rope_cos / rope_sin
  DeviceBuffer<float> rope_cos, rope_sin;
  bool head_grad_ready = false;         // the training forward took the head's gradient
  DeviceBuffer<float> dxf, dlm_head;    // [N, D], [V, D]

  // Scratch.
  GpuAttnScratch attn;
  GpuLmHeadScratch head;
  GpuMoeScratch moe_scratch;
  DeviceBuffer<float> dh, dxn, datt, dq, dk, dv, dz, dz_prev, norm_scratch;
  DeviceBuffer<__nv_bfloat16> op_a, op_b;  // BF16 copies of a product's two operands (kBF16)
};

class GpuModel {
 public:
  // Throws moepp::Error when cfg is invalid or a block's MoE++ config is not supported on the GPU.
  GpuModel(ModelConfig cfg, GpuModelOptions opt);
  const ModelConfig& config() const { return cfg_; }
  const GpuModelOptions& options() const { return opt_; }

  // tokens, targets: [B*T] host arrays (target -1 = ignored; targets may be null), checked as the CPU
  // model checks them. Returns the mean cross-entropy (0 without targets). training: balance loss and
  // capacity in every block, and (with targets) the head's gradient. p: weights (with BF16 copies for
  // kBF16). Waits for the device.
  float forward(GpuModelState& st, const int32_t* tokens, const int32_t* targets, int64_t B, int64_t T,
                const GpuModelParams& p, bool training, GpuContext& ctx) const;

  // Accumulates into grads (GpuModelParams::zeros shapes) the gradient of CE + the blocks' aux losses
  // for the last forward pass, which must have been a training pass.
  void backward(GpuModelParams& grads, GpuModelState& st, const GpuModelParams& p, GpuContext& ctx) const;

 private:
  ModelConfig cfg_;
  GpuModelOptions opt_;
  std::vector<GpuMoeLayer> infer_layers_, train_layers_;
  const GpuMoeLayer& layer(int64_t i, bool training) const { return training ? train_layers_[i] : infer_layers_[i]; }
};

}  // namespace moepp::gpu
