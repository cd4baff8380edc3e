// The GPU training step's benchmark (docs/gpu.md), shared by moepp_gpu_train (the GPU machine's driver)
// and `moepp bench train --device cuda`: GpuTrainer steps on random batches (train_batches.h) of one
// model, timed on the host around each step (a step ends with the device idle: GpuTrainer::step waits
// for it), the median of `steps` after `warmup` untimed ones. One JSON record ("train_step") with the
// model (parameters, FFN slots per token), tokens/s, the model FLOPs of a training token (train_flops.h),
// the achieved TFLOP/s and the MFU against the datasheet peak and, when given, the measured dense cuBLAS
// rate. Needs a CUDA device (moepp::Error otherwise).
#pragma once

#include <cstdint>
#include <functional>
#include <string>

#include <nlohmann/json.hpp>

#include "gpu/gpu_model.h"
#include "model/model_config.h"
#include "train/adamw.h"

namespace moepp {

// The H200's dense BF16 tensor-core peak from the datasheet, TFLOP/s (about 990, without sparsity).
inline constexpr double kH200DenseBf16PeakTflops = 989.4;

struct GpuTrainBenchOptions {
  std::string name;  // what the record calls the model (the config file)
  ModelConfig model;
  int64_t batch = 16, seq = 1024;
  int steps = 10, warmup = 3;
  float lr = 1e-3f, grad_clip = 1.0f, init_std = 0.02f;
  uint64_t seed = 1;
  AdamWConfig adam;
  gpu::GpuModelOptions gpu{gpu::Precision::kBF16, gpu::GroupedGemmMode::kPerProduct};
  double dense_tflops = 0.0;  // measured dense cuBLAS BF16 rate; 0: not given
  double peak_tflops = kH200DenseBf16PeakTflops;
  std::string commit;
};

using TrainBenchEmit = std::function<void(const nlohmann::json&)>;

void gpu_train_bench(const GpuTrainBenchOptions& o, const TrainBenchEmit& emit);

}  // namespace moepp
