// The facts every benchmark JSON line carries, so that figures from different machines and commits are
// never mixed up: the source commit (`git describe --always --dirty` of the tree the binary was built
// from, "unknown" outside a checkout), the CPU model (name, family and model number), the OpenMP
// threads, the 1-minute load average, the decode kernels' streaming prefetch setting
// (core/stream_prefetch.h) and the Q4 kernel in use.
#pragma once

#include <nlohmann/json.hpp>

namespace moepp {

// {"commit", "cpu", "cpu_family_model" ("family 6 model 167"), "threads", "load_avg_1m",
// "stream_prefetch", "q4_kernel"}; commit and CPU are read once per process, the rest at every call.
nlohmann::json bench_environment();

}  // namespace moepp
