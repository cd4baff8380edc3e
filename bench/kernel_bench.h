// `moepp bench kernels`: moepp's own weight-row kernels side by side with the alternatives this binary
// carries, through WeightMatrix::matmul (see kernel_bench.cpp).
#pragma once

#include <string>

namespace moepp {

// rows: input rows per product (1 = decoding; up to 8 takes the streaming kernels, more the GEMM path).
// copies: how many of each expert matrix one pass reads (16: far beyond the L3 cache).
// prefetch_baseline: empty for the kernels (Q4 VNNI vs AVX2, and with rows 1 the decode attention);
// else a streaming prefetch setting ("l1_2048") that every dtype's products run with against the
// default one. Prints one JSON object per line. Returns 0; throws moepp::Error on a bad argument.
int run_kernel_bench(int reps, int rows, int copies, const std::string& prefetch_baseline);

}  // namespace moepp
