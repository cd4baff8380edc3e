// The GPU training step's benchmark (see gpu_train_bench.h).
#include "gpu_train_bench.h"

#include <algorithm>
#include <chrono>
#include <string>
#include <vector>

#include "core/error.h"
#include "gpu/gpu_device.h"
#include "gpu/gpu_trainer.h"
#include "gpu/train_flops.h"
#include "model/model_params.h"
#include "train_batches.h"

namespace moepp {
namespace {

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

}  // namespace

void gpu_train_bench(const GpuTrainBenchOptions& o, const TrainBenchEmit& emit) {
  check(o.steps >= 1 && o.warmup >= 0, "gpu train bench: steps must be >= 1 and warmup >= 0");
  check(o.batch >= 1 && o.seq >= 1 && o.seq <= o.model.max_pos,
        "gpu train bench: batch >= 1 and 1 <= seq <= max_position_embeddings needed");
  std::string why;
  const int devices = gpu::device_count(&why);
  check(devices > 0, "gpu train bench: no CUDA device (" + why + ")");
  const ModelConfig& mc = o.model;
  int64_t n_params = 0;
  for (const ParamSpec& s : param_specs(mc)) {
    int64_t n = 1;
    for (int64_t d : s.shape) n *= d;
    n_params += n;
  }
  ModelParams init = ModelParams::zeros(mc);
  init.init_random(mc, o.seed, o.init_std);
  LrSchedule sched;  // constant lr (as the CPU benchmark): no warmup, already at its end
  sched.init_lr = sched.peak_lr = sched.min_lr = o.lr;
  sched.warmup_steps = 0;
  sched.total_steps = 0;
  gpu::GpuContext ctx;
  gpu::GpuTrainer tr(mc, init, o.gpu, o.adam, sched, o.grad_clip, ctx);
  init = ModelParams();  // the host copy is no longer needed

  const int total = o.warmup + o.steps;
  std::vector<std::vector<int32_t>> inputs, targets;
  random_train_batches(inputs, targets, total, o.batch, o.seq, mc.vocab);
  std::vector<double> step_ms;
  std::vector<double> ffn(static_cast<size_t>(mc.n_layers), 0.0);
  double loss_first = 0.0, loss_last = 0.0;
  for (int s = 0; s < total; ++s) {
    const auto t0 = std::chrono::steady_clock::now();
    const gpu::GpuStepStats r = tr.step(inputs[s].data(), targets[s].data(), o.batch, o.seq);
    const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    if (s == 0) loss_first = r.loss;
    loss_last = r.loss;
    if (s < o.warmup) continue;
    step_ms.push_back(ms);
    for (int64_t l = 0; l < mc.n_layers; ++l) ffn[l] += tr.state().ffn_experts_per_token[l] / o.steps;
  }
  const double ms = median(step_ms);
  const double tokens = static_cast<double>(o.batch * o.seq);
  const double tps = tokens / (ms * 1e-3);
  const gpu::TrainFlops f = gpu::train_flops_per_token(mc, o.seq, std::vector<float>(ffn.begin(), ffn.end()));
  const double tflops = f.total() * tps * 1e-12;
  nlohmann::json j = {{"bench", "train_step"},
                      {"commit", o.commit},
                      {"gpu", gpu::device_name(0)},
                      {"model", o.name},
                      {"params", n_params},
                      {"precision", gpu::precision_name(o.gpu.precision)},
                      {"gemm", gpu::grouped_gemm_mode_name(o.gpu.gemm)},
                      {"batch", o.batch},
                      {"seq_len", o.seq},
                      {"steps", o.steps},
                      {"warmup", o.warmup},
                      {"step_ms", ms},
                      {"step_ms_all", step_ms},
                      {"tokens_per_s", tps},
                      {"ffn_slots_per_token", ffn},
                      {"flops_per_token", {{"dense", f.dense}, {"attention", f.attention}, {"experts", f.experts},
                                           {"total", f.total()}}},
                      {"model_tflops", tflops},
                      {"peak_tflops", o.peak_tflops},
                      {"mfu_peak", tflops / o.peak_tflops},
                      {"loss_first", loss_first},
                      {"loss_last", loss_last}};
  if (o.dense_tflops > 0) {
    j["dense_tflops"] = o.dense_tflops;
    j["mfu_dense"] = tflops / o.dense_tflops;
  }
  emit(j);
}

}  // namespace moepp
