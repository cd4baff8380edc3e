// `moepp bench train`: training throughput (tokens/s) of one model preset, optionally side by side with
// the same model in PyTorch eager (options here; the runner lives in train_bench.cpp).
#pragma once

#include <cstdint>
#include <string>

namespace moepp {

struct TrainBenchOptions {
  std::string config;   // training config whose "model" block is used ("" = configs/slice-moepp.json)
  int64_t batch = 0;    // 0 = the config's batch_size
  int64_t seq_len = 0;  // 0 = the config's seq_len
  int steps = 5;        // timed steps (after `warmup` untimed ones); the median is reported
  int warmup = 1;
  bool torch = false;   // also run bench/torch_train_eager.py
  bool profile = false; // add per-section wall ms per timed step (core/profile.h) to the JSON
  std::string device = "cpu";        // cpu, or cuda: GpuTrainer (docs/gpu.md; a build with nvcc)
  std::string precision = "bf16";    // --device cuda: f32 or bf16 products
  std::string gemm = "per-expert";   // --device cuda: per-expert or grouped expert GEMMs
};

int run_train_bench(const TrainBenchOptions& opt);

}  // namespace moepp
