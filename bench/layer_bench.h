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
};

int run_layer_bench(const LayerBenchOptions& opt);

}  // namespace moepp
