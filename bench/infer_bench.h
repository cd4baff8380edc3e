// `moepp bench infer`: prefill and decode tokens/s of the KV-cache decoder on a randomly initialised
// model shaped like llama.cpp's reference MoE measurement (8 layers, D 1024, 16 heads, 8 FFN experts of
// I 2816, top-2, vocab 32000), for F32, BF16 and INT8 weights, as a vanilla MoE and as MoE++ (8 FFN +
// 4 zero-computation experts, router tuned so that about half the slots go to zero-computation
// experts). Prints one JSON object per measurement plus a summary with the ratios (options here; the
// runner lives in infer_bench.cpp).
#pragma once

#include <cstdint>
#include <string>

namespace moepp {

struct InferBenchOptions {
  std::string dtypes = "f32,bf16,int8";  // comma list
  std::string variants = "moe,moepp";    // comma list: vanilla top-2 MoE and/or MoE++
  int64_t prompt = 512;                  // prefill tokens (llama.cpp's pp512)
  int64_t gen = 128;                     // decoded tokens (llama.cpp's tg128)
  int reps = 2;                          // timings per measurement; the best is reported
  int64_t layers = 8, hidden = 1024, heads = 16, intermediate = 2816, vocab = 32000;
  double zc_fraction = 0.5;              // MoE++: target fraction of slots on zero-computation experts
  std::string zc_biases = "0";           // MoE++: comma list of --zc-bias values, each measured
};

int run_infer_bench(const InferBenchOptions& opt);

}  // namespace moepp
