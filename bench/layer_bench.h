// `moepp bench layer`: the MoE++ layer benchmark (options here; the runner lives in layer_bench.cpp).
#pragma once

#include <string>

namespace moepp {

struct LayerBenchOptions {
  bool json = false;
  int reps = 3;
  int tokens = 4096;
  std::string cases = "all";
  std::string fractions = "1.0,0.85,0.7,0.5";
  bool torch = false;
  std::string device = "cpu";          // cpu, or cuda (the GPU layer, bench/gpu/gpu_layer_bench.h)
  std::string precision = "bf16";      // --device cuda: f32 or bf16 experts
  std::string gemm = "per-expert";     // --device cuda: per-expert or grouped expert GEMMs
};

int run_layer_bench(const LayerBenchOptions& opt);

}  // namespace moepp
