// `moepp bench ep`: the MoE layer under expert parallelism (run it under mpirun), vanilla MoE and MoE++
// of the same FFN experts side by side in one run: forward/backward time, time in communication,
// and the bytes each layer exchanges against what its routing implies (runner: ep_bench.cpp).
#pragma once

#include <string>

#include "comm/comm.h"

namespace moepp {

struct EpBenchOptions {
  std::string cases = "768x2048-8+4";
  std::string fractions = "1.0,0.75,0.5";
  int tokens = 1024;  // per rank (weak scaling)
  int reps = 3;
};

// Every rank of `world` runs it; rank 0 prints one JSON line per case and fraction.
int run_ep_bench(const EpBenchOptions& opt, Comm& world);

}  // namespace moepp
