// `moepp bench gemm`: OpenBLAS vs oneDNN sgemm at the MoE expert shapes (see gemm_bench.cpp).
#pragma once

namespace moepp {

// Measures every backend side by side in one run, best of `reps` timings per shape; prints one line per
// shape (a JSON object with `json`, else a table row). Returns 0 (non-zero on failure).
int run_gemm_bench(bool json, int reps);

}  // namespace moepp
