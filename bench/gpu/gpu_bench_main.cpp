// moepp_gpu_bench: the GPU layer's benchmark driver (gpu_layer_bench.h, docs/gpu.md) for the GPU machine's
// GPU-only build; one JSON line per measurement on stdout.
//   --mode dense     cuBLAS's dense BF16 rate: one --dense-n³ GEMM (default 8192).
//   --mode experts   MoE++ vs MoE expert forward at each of --fractions (default 1.0,0.85,0.7,0.5), and
//                    the expert GEMMs against one dense GEMM of the same FLOPs, at --tokens (16384).
//   --mode layer     the MoE++ layer's forward and forward + backward at each of --tokens-list
//                    (2048,4096,16384), steered to --fraction (0.85); --dense-tflops R adds the share.
// Common: --case (a shape of layer_cases.h, default the 7B layer 1536x4096-16+4), --precision f32|bf16
// (bf16), --gemm per-expert|grouped, --reps (20), --warmup (3), --commit (copied into every line).
#include <cstdio>
#include <sstream>

#include "core/error.h"
#include "gpu_args.h"
#include "gpu_layer_bench.h"

namespace moepp {
namespace {

template <class T>
std::vector<T> parse_list(const std::string& s, const std::string& name) {
  std::vector<T> out;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, ',')) {
    std::stringstream is(item);
    T v{};
    if (!(is >> v) || !is.eof() || v <= 0) throw Error(name + ": expected a comma-separated list of positive numbers");
    out.push_back(v);
  }
  if (out.empty()) throw Error(name + ": empty list");
  return out;
}

int run(int argc, char** argv) {
  const gpu_cli::Args a(argc, argv,
                        {"--mode", "--case", "--tokens", "--tokens-list", "--fractions", "--fraction", "--precision",
                         "--gemm", "--reps", "--warmup", "--commit", "--dense-n", "--dense-tflops"},
                        {});
  const std::string mode = a.require("--mode");
  if (mode != "dense" && mode != "experts" && mode != "layer")
    throw Error("--mode: expected dense, experts or layer, got '" + mode + "'");
  GpuLayerBenchOptions o;
  if (a.has("--case")) o.shape = shapes_named(a.get("--case", ""), "--case").at(0);
  o.tokens = a.integer("--tokens", o.tokens, 1, 1 << 20);
  o.reps = static_cast<int>(a.integer("--reps", o.reps, 1, 1000));
  o.warmup = static_cast<int>(a.integer("--warmup", o.warmup, 0, 100));
  o.precision = gpu::parse_precision(a.get("--precision", "bf16"), "--precision");
  o.gemm = gpu::parse_grouped_gemm_mode(a.get("--gemm", "per-expert"), "--gemm");
  o.commit = a.get("--commit", "");
  const std::vector<double> fractions = fractions_named(a.get("--fractions", "1.0,0.85,0.7,0.5"), "--fractions");
  const std::vector<int64_t> tokens = parse_list<int64_t>(a.get("--tokens-list", "2048,4096,16384"), "--tokens-list");
  const double fraction = fractions_named(a.get("--fraction", "0.85"), "--fraction").at(0);
  const double dense_tflops = a.has("--dense-tflops") ? parse_list<double>(a.get("--dense-tflops", ""), "--dense-tflops")[0] : 0.0;
  const int64_t dense_n = a.integer("--dense-n", 8192, 64, 32768);
  const BenchEmit emit = [](const nlohmann::json& j) {
    std::printf("%s\n", j.dump().c_str());
    std::fflush(stdout);
  };
  if (mode == "dense") gpu_dense_bench(o, dense_n, emit);
  else if (mode == "experts") gpu_expert_forward_bench(o, fractions, emit);
  else gpu_layer_fwd_bwd_bench(o, tokens, fraction, dense_tflops, emit);
  return 0;
}

}  // namespace
}  // namespace moepp

int main(int argc, char** argv) { return moepp::gpu_cli::guarded_main("moepp_gpu_bench", moepp::run, argc, argv); }
