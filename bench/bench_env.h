// The facts every benchmark JSON line carries, so that figures from different machines and commits are
// never mixed up: the source commit (`git describe --always --dirty` of the tree the binary was built
// from, "unknown" outside a checkout), the CPU model, the OpenMP threads and the 1-minute load average.
#pragma once

#include <nlohmann/json.hpp>

namespace moepp {

// {"commit": ..., "cpu": ..., "threads": ..., "load_avg_1m": ...}; commit and CPU are read once per
// process, the load average at every call.
nlohmann::json bench_environment();

}  // namespace moepp
