// `moepp bench infer`: prefill and decode tokens/s of the KV-cache decoder on a randomly initialised
// model (8 layers, D 1024, 16 heads, 8 FFN experts of I 2816, top-2, vocab 32000), for F32, BF16, INT8
// and Q4 weights, as a vanilla MoE and as MoE++ (8 FFN + 4 zero-computation experts, router tuned so
// that about half the slots go to zero-computation experts). The vanilla model's router is Mixtral's
// (softmax of the top-k logits, one linear gate, no logit normalisation), so that it is exactly the
// function of llama.cpp's `llama` architecture with experts. Every run first probes the memory read
// bandwidth (bandwidth_probe.h) and reports decode as a share of that roofline. --gguf-out writes the
// vanilla model as a GGUF file; --llama-bench runs llama.cpp's llama-bench on the same weights (F32 and
// BF16 GGUFs, Q8_0 and Q4_0 made with llama-quantize --pure) interleaved with moepp's own measurement
// in pairs, and reports the ratios. Prints one JSON object per measurement plus summaries (options
// here; the runner lives in infer_bench.cpp).
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
  std::string gguf_out;                  // non-empty: write the vanilla random model there as GGUF
  std::string gguf_dtype = "f32";        // f32 or bf16: the GGUF's matrices
  std::string save_model;                // non-empty: write the first variant's random model there as an
                                         // F32 checkpoint (config.json + model.safetensors)
  std::string llama_bench;               // non-empty: the llama-bench binary (side-by-side mode)
  std::string llama_quantize;            // default: llama-quantize next to llama_bench
  std::string gguf_dir;                  // side-by-side: where the GGUF files go (default: a new /tmp dir)
  int pairs = 5;                         // side-by-side: interleaved (moepp, llama.cpp) pairs per dtype
  bool keep_gguf = false;                // side-by-side: keep the GGUF files afterwards
  std::string kv_dtype = "auto";         // moepp's KV cache: auto (by weight dtype), f32 or bf16
  bool profile = false;                  // add the decoder's section times ("profile"; not side by side)
  bool packed_prefill = false;           // BF16: also keep the weights packed for prefill
                                         // (InferWeights::pack_bf16_for_many_rows)
  std::string prefetch;                  // non-empty: the streaming prefetch setting to run with
                                         // (core/stream_prefetch.h, e.g. "l1_2048"); default: the default
  bool adaptive_threads = false;         // decode steps through a ThreadGovernor (infer/thread_governor.h)
  std::string q4_kernel;                 // non-empty: the Q4 kernel to run with (q4_force_kernel: avx512vnni,
                                         // avx2, portable); default: the best this CPU runs
};

int run_infer_bench(const InferBenchOptions& opt);

}  // namespace moepp
