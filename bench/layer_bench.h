// `moepp bench layer`: options and entry point of the MoE vs MoE++ layer benchmark (layer_bench.cpp).
#pragma once

#include <string>

namespace moepp {

struct LayerBenchOptions {
  bool json = false;
  int reps = 3;
  int tokens = 4096;
  std::string cases = "all";  // comma list of shape names, or "all"
  std::string fractions = "1.0,0.85,0.7,0.5";
  bool torch = false;  // also run bench/torch_layer_eager.py
};

int run_layer_bench(const LayerBenchOptions& opt);

}  // namespace moepp
