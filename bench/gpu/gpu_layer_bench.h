// The GPU layer's benchmark (docs/gpu.md), shared by moepp_gpu_bench (the GPU machine's driver) and
// `moepp bench layer --device cuda`: cuBLAS's dense BF16 rate; the paper's Table 3 measurement (the
// expert forward of MoE++ at FFN-slot fractions against the vanilla MoE with the same FFN experts) with
// the expert GEMMs' rate against one dense GEMM of the same FLOPs; and the layer's forward and
// forward + backward. Every measurement is one JSON object handed to `emit`, with the commit, the GPU,
// the precision and the expert-GEMM mode. Times: CUDA events around each repeat after `warmup`
// repeats, the median of `reps`. Each function needs a CUDA device (moepp::Error otherwise).
#pragma once

#include <cstdint>
#include <functional>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "gpu/gpu_gemm.h"
#include "gpu/gpu_support.h"
#include "layer_cases.h"

namespace moepp {

struct GpuLayerBenchOptions {
  ShapeCase shape = all_shapes().back();  // the spec's 7B layer: 1536x4096, 16 FFN + 1/1/2 experts
  int64_t tokens = 16384;
  int reps = 20, warmup = 3;
  gpu::Precision precision = gpu::Precision::kBF16;
  gpu::GroupedGemmMode gemm = gpu::GroupedGemmMode::kPerProduct;
  std::string commit;
};

using BenchEmit = std::function<void(const nlohmann::json&)>;

// One n³ BF16 GEMM on random data; returns its TFLOP/s.
double gpu_dense_bench(const GpuLayerBenchOptions& o, int64_t n, const BenchEmit& emit);
// "expert_gemm_rate" once, then "expert_forward" per fraction (MoE++ steered to it, against MoE).
void gpu_expert_forward_bench(const GpuLayerBenchOptions& o, const std::vector<double>& fractions,
                              const BenchEmit& emit);
// "layer_fwd_bwd" per token count (MoE++ in training mode steered to `fraction`); with dense_tflops > 0
// also its share of that rate.
void gpu_layer_fwd_bwd_bench(const GpuLayerBenchOptions& o, const std::vector<int64_t>& tokens, double fraction,
                             double dense_tflops, const BenchEmit& emit);

}  // namespace moepp
