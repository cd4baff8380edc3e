// StepBackend: another engine for a training run's optimizer steps (the GPU's, gpu/gpu_trainer.h,
// plugged in by the cli: the train layer does not know it). The trainer keeps everything else of the run
// on the host (data, lr schedule, log, evaluation, checkpoints, resume); a backend holds its own copy of
// the weights and the optimizer state, runs each step (forward, backward, gradient norm, clipping, AdamW
// at the schedule's lr) and gives the weights and the optimizer state back before every evaluation and
// checkpoint, so that those stay the CPU's code. One process, one micro-batch a step. Not thread-safe;
// the trainer calls it from one thread.
#pragma once

#include <cstdint>
#include <vector>

#include "model/model_config.h"
#include "model/model_params.h"
#include "train/adamw.h"
#include "train/lr_schedule.h"

namespace moepp {

struct BackendStepStats {
  double loss = 0.0;          // mean cross-entropy of the batch
  double aux = 0.0;           // sum of the blocks' aux losses
  float gnorm = 0.0f, lr = 0.0f;
  std::vector<double> ffn;    // [layers] FFN experts per token
};

class StepBackend {
 public:
  virtual ~StepBackend() = default;
  // The run as it starts (fresh or resumed): its model, weights, optimizer state (m, v and step count of
  // `adam`, in param_specs order), AdamW settings, lr schedule and clipping (grad_clip <= 0: none).
  virtual void start(const ModelConfig& mc, const ModelParams& params, const AdamW& adam, const AdamWConfig& ac,
                     const LrSchedule& sched, float grad_clip) = 0;
  // One optimizer step on inputs / targets [B*T]; the lr is the schedule's at the optimizer's step count.
  virtual BackendStepStats step(const int32_t* inputs, const int32_t* targets, int64_t B, int64_t T) = 0;
  // The current weights and optimizer state into params and adam (shaped as start's).
  virtual void sync_to_host(ModelParams& params, AdamW& adam) = 0;
};

}  // namespace moepp
