// `moepp bench gemm`: OpenBLAS vs oneDNN sgemm at the MoE expert shapes (see gemm_bench.cpp).
#pragma once

namespace moepp {

// Measures every backend side by side in one run, best of `reps` timings per shape; prints one line per
// shape (a JSON object with `json`, else a table row). Returns 0 (non-zero on failure).
int run_gemm_bench(bool json, int reps);

// The bf16 products of many rows on the benchmark model's expert weights (up [2 x 2816, 1024], down
// [1024, 2816]) at 9-512 rows: gemm_bf16_parallel on the stored layout (run-time row count) against
// Bf16PackedWeights (packed once, a primitive per row count), the two alternating within each of `reps`
// repetitions. One JSON line per shape: median ms of each (with range) and the median per-repetition
// ratio plain / packed (with range), plus bench_environment(). Returns 0; 1 where nothing is packed
// (no native bf16 products), saying so.
int run_bf16_packed_bench(int reps);

}  // namespace moepp
