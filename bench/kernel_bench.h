// `moepp bench kernels`: moepp's own weight-row kernels side by side with the alternatives this binary
// carries, through WeightMatrix::matmul (see kernel_bench.cpp).
#pragma once

namespace moepp {

// rows: input rows per product (1 = decoding; up to 8 takes the streaming kernels, more the GEMM path).
// copies: how many of each expert matrix one pass reads (16: far beyond the L3 cache). Prints one JSON
// object per line. Returns 0.
int run_kernel_bench(int reps, int rows, int copies);

}  // namespace moepp
