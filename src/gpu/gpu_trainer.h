// GpuTrainer: the training step of train/trainer.cpp on the GPU for one process: zero the gradients,
// forward + backward of one batch (GpuModel), the global gradient norm, AdamW with the clipping factor
// as its gradient scale and the learning rate of the step from the CPU's LrSchedule and clip_scale (one
// implementation of each, run on the host), then the BF16 copies of the weights refreshed from the fp32
// masters. The weights come from and go back to the CPU's ModelParams (so checkpoints are written by
// the CPU's code). Owns the device weights, gradients, optimizer state and model state; uses the
// caller's context, which must outlive it. One micro-batch per step (no gradient accumulation), one
// process. One thread at a time.
#pragma once

#include <cstdint>
#include <memory>

#include "gpu/gpu_adamw.h"
#include "gpu/gpu_context.h"
#include "gpu/gpu_model.h"
#include "model/model_params.h"
#include "train/adamw.h"
#include "train/lr_schedule.h"

namespace moepp::gpu {

struct GpuStepStats {
  float loss = 0.0f;   // mean cross-entropy of the batch
  float aux = 0.0f;    // sum of the blocks' aux losses
  float gnorm = 0.0f;  // global gradient norm before clipping
  float lr = 0.0f;
};

class GpuTrainer {
 public:
  // init: the starting weights (shaped for mc); grad_clip <= 0: no clipping.
  GpuTrainer(const ModelConfig& mc, const ModelParams& init, GpuModelOptions opt, AdamWConfig adam, LrSchedule sched,
             float grad_clip, GpuContext& ctx);

  // One optimizer step on inputs / targets [B*T] (host; as GpuModel::forward checks them).
  GpuStepStats step(const int32_t* inputs, const int32_t* targets, int64_t B, int64_t T);

  // The fp32 master weights / the last step's gradients into out (shaped as ModelParams::zeros(mc)).
  void download_weights(ModelParams& out);
  void download_grads(ModelParams& out);
  // The optimizer state into `adam`, an AdamW over tensors in param_specs order (as the CPU trainer makes
  // it, so that the CPU's checkpoint code writes it): every tensor's m and v, and the step count. Throws
  // moepp::Error when its tensors are not this optimizer's (names, sizes).
  void download_optimizer(AdamW& adam);
  // The reverse (resuming): m, v and the step count from `adam` (the same layout), e.g. a checkpoint's
  // optimizer state read by the CPU's code. Waits for the copies.
  void upload_optimizer(const AdamW& adam);

  int64_t steps() const { return adam_->steps(); }
  const GpuModel& model() const { return model_; }
  const GpuModelState& state() const { return st_; }

 private:
  ModelConfig mc_;
  GpuModel model_;
  GpuContext& ctx_;
  GpuModelParams params_, grads_;
  std::unique_ptr<GpuAdamW> adam_;
  LrSchedule sched_;
  float grad_clip_;
  GpuModelState st_;
};

}  // namespace moepp::gpu
