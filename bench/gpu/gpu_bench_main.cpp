// moepp_gpu_bench: the GPU layer's benchmark (docs/gpu.md), one JSON line per measurement on stdout.
//   --mode dense     cuBLAS's dense BF16 rate: one --dense-n³ GEMM (default 8192).
//   --mode experts   the paper's Table 3 measurement on the GPU: the expert forward (FFN experts +
//                    zero-computation experts: gather, grouped GEMMs, SwiGLU, fused combine) of MoE++
//                    at each FFN-slot fraction of --fractions against the vanilla top-K MoE with the same
//                    FFN experts; and the expert GEMMs' TFLOP/s against one dense cuBLAS GEMM of the same
//                    FLOPs (M = rows, N = 3I, K = D).
//   --mode layer     forward and forward + backward of the whole MoE++ layer at each of --tokens-list.
// The MoE++ router is steered like `moepp bench layer` and bench/torch_layer_eager.py: x[:, 0] = 1 and
// the zero-computation experts' router weight on it is bisected until the measured share of slots on FFN
// experts is the target. Times: CUDA events around each repeat after --warmup repeats; the median of
// --reps. Shape defaults: the spec's 7B layer (D 1536, I 4096, 16 FFN + 1 zero, 1 copy, 2 constant
// experts, top-2, logits norm, no K·x scaling), 16384 tokens, BF16.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <functional>
#include <nlohmann/json.hpp>
#include <sstream>
#include <vector>

#include "core/error.h"
#include "gpu/gpu_device.h"
#include "gpu/gpu_experts.h"
#include "gpu/gpu_moe_layer.h"
#include "gpu_args.h"
#include "moe/moe_params.h"

namespace moepp {
namespace {

using gpu::DeviceBuffer;
using gpu::ElemType;
using gpu::GpuContext;

struct Bench {
  int64_t D = 1536, I = 4096, n_ffn = 16, n_zero = 1, n_copy = 1, n_const = 2, K = 2, T = 16384;
  int reps = 20, warmup = 3;
  gpu::Precision prec = gpu::Precision::kBF16;
  gpu::GroupedGemmMode gemm = gpu::GroupedGemmMode::kPerProduct;
  std::string commit, gpu_name;
};

MoeConfig layer_config(const Bench& b, bool moepp, bool training) {
  nlohmann::json j = {{"hidden_size", b.D},
                      {"intermediate_size", b.I},
                      {"num_experts", moepp ? b.n_ffn + b.n_zero + b.n_copy + b.n_const : b.n_ffn},
                      {"moe_top_k", b.K},
                      {"moe_router", moepp ? "moepp" : "topk"},
                      {"moe_2layer_gate", false},
                      {"moe_use_logits_norm", true},
                      {"moe_feature_no_mul_topk", true},
                      {"moe_gating_residual", false},
                      {"training", training}};
  if (moepp) j.update({{"n_zero_experts", b.n_zero}, {"n_copy_experts", b.n_copy}, {"n_constant_experts", b.n_const}});
  return MoeConfig::from_json(j, "moepp_gpu_bench");
}

// The median of `reps` timed runs of f after `warmup` runs, in ms (CUDA events on ctx's stream).
double median_ms(GpuContext& ctx, int reps, int warmup, const std::function<void()>& f) {
  for (int i = 0; i < warmup; ++i) f();
  gpu::CudaEvent a, b;
  std::vector<double> ms;
  for (int i = 0; i < reps; ++i) {
    a.record(ctx.s());
    f();
    b.record(ctx.s());
    ms.push_back(gpu::CudaEvent::elapsed_ms(a, b));
  }
  std::sort(ms.begin(), ms.end());
  return ms[ms.size() / 2];
}

nlohmann::json record(const Bench& b, const std::string& what) {
  return {{"bench", what}, {"commit", b.commit}, {"gpu", b.gpu_name}, {"precision", gpu::precision_name(b.prec)},
          {"gemm", gpu::grouped_gemm_mode_name(b.gemm)}, {"reps", b.reps}, {"warmup", b.warmup}};
}

void emit(const nlohmann::json& j) {
  std::printf("%s\n", j.dump().c_str());
  std::fflush(stdout);
}

// Uniform values in [-1, 1) from a xorshift64 sequence (the dense GEMMs' operands: random data, not zeros,
// which run faster on this hardware).
std::vector<float> uniform(int64_t n, uint64_t seed) {
  std::vector<float> v(n);
  uint64_t s = seed * 2654435761ull + 88172645463325252ull;
  for (float& x : v) {
    s ^= s << 13, s ^= s >> 7, s ^= s << 17;
    x = static_cast<float>(static_cast<double>(s >> 11) / 4503599627370496.0 - 1.0);
  }
  return v;
}

// A layer with random weights (uniform, std 0.02; v std 1) and input x ~ N(0, 1) with x[:, 0] = 1.
struct Setup {
  MoeConfig cfg;
  gpu::GpuMoeLayer layer;
  MoeParams host;
  gpu::GpuMoeParams prm;
  DeviceBuffer<float> x, y;
  gpu::GpuMoeState st;
  Setup(const Bench& b, bool moepp, bool training, int64_t T, GpuContext& ctx)
      : cfg(layer_config(b, moepp, training)), layer(cfg, {b.prec, b.gemm}), host(MoeParams::zeros(cfg)) {
    // Uniform with std 0.02 (v: std 1): the distribution only sets the routing and magnitudes, and
    // MoeParams::init_random's normal draws take seconds for the 7B layer's 300M weights.
    for (auto& [name, t] : host.named(cfg)) {
      const float scale = std::sqrt(3.0f) * (name.size() > 9 && name.rfind(".constant") == name.size() - 9 ? 1.0f : 0.02f);
      const std::vector<float> u = uniform(static_cast<int64_t>(t->numel()), std::hash<std::string>{}(name));
      for (size_t i = 0; i < u.size(); ++i) t->data[i] = scale * u[i];
    }
    prm = gpu::GpuMoeParams::upload(host, cfg, b.prec, ctx.s());
    std::vector<float> xs(T * cfg.hidden);
    uint64_t s = 88172645463325252ull;
    for (size_t i = 0; i < xs.size(); i += 2) {  // Box-Muller on xorshift64
      auto u = [&s] {
        s ^= s << 13, s ^= s >> 7, s ^= s << 17;
        return (static_cast<double>(s >> 11) + 0.5) / 9007199254740992.0;
      };
      const double r = std::sqrt(-2.0 * std::log(u())), th = 6.283185307179586 * u();
      xs[i] = static_cast<float>(r * std::cos(th));
      if (i + 1 < xs.size()) xs[i + 1] = static_cast<float>(r * std::sin(th));
    }
    for (int64_t t = 0; t < T; ++t) xs[t * cfg.hidden] = 1.0f;
    gpu::upload(x, xs, ctx.s());
    y.ensure(T * cfg.hidden);
  }
  double ffn_fraction(int64_t T, GpuContext& ctx) {
    layer.route(st, x.get(), nullptr, prm, T, ctx);
    return static_cast<double>(st.ffn_rows()) / static_cast<double>(T * cfg.top_k);
  }
  // Bisects the zero-computation experts' weight on x[:, 0] for an FFN-slot fraction near `target`.
  double steer(double target, int64_t T, GpuContext& ctx) {
    if (cfg.n_zc() == 0) return ffn_fraction(T, ctx);
    auto at = [&](float bias) {
      for (int64_t e = cfg.n_ffn(); e < cfg.n_experts; ++e) host.wg.data[e * cfg.hidden] = bias;
      gpu::upload(prm.wg, host.wg.data, ctx.s());
      return ffn_fraction(T, ctx);
    };
    double lo = -20.0, hi = 20.0;
    if (at(static_cast<float>(lo)) <= target) return at(static_cast<float>(lo));
    for (int i = 0; i < 40; ++i) {
      const double mid = 0.5 * (lo + hi);
      (at(static_cast<float>(mid)) > target ? lo : hi) = mid;
    }
    const double flo = at(static_cast<float>(lo)), fhi = at(static_cast<float>(hi));
    return at(static_cast<float>(std::fabs(flo - target) <= std::fabs(fhi - target) ? lo : hi));
  }
};

// Dense BF16 GEMM C [m, n] = A [m, k] · B [k, n] (fp32 accumulation) on random data: the ms of one.
double dense_ms(GpuContext& ctx, const Bench& b, int64_t m, int64_t n, int64_t k) {
  DeviceBuffer<__nv_bfloat16> A(m * k), B(k * n), C(m * n);
  {
    DeviceBuffer<float> f;
    gpu::upload(f, uniform(m * k, 1), ctx.s());
    gpu::convert_to_bf16(A.get(), f.get(), m * k, ctx.s());
    gpu::upload(f, uniform(k * n, 2), ctx.s());
    gpu::convert_to_bf16(B.get(), f.get(), k * n, ctx.s());
    ctx.stream.synchronize();
  }
  return median_ms(ctx, b.reps, b.warmup, [&] {
    gpu::gemm(ctx.blas.get(), {false, false, m, n, k, k, n, n}, 1.0f, A.get(), ElemType::kBF16, B.get(), ElemType::kBF16,
              0.0f, C.get(), ElemType::kBF16, "dense");
  });
}

void run_dense(const Bench& b, GpuContext& ctx, int64_t n) {
  const double ms = dense_ms(ctx, b, n, n, n);
  nlohmann::json j = record(b, "dense_gemm");
  j.update({{"m", n}, {"n", n}, {"k", n}, {"ms", ms}, {"tflops", 2.0 * n * n * n / (ms * 1e9)}, {"note", "uniform random operands"}});
  emit(j);
}

void run_experts(const Bench& b, GpuContext& ctx, const std::vector<double>& fractions) {
  const int64_t T = b.T;
  Setup moe(b, false, false, T, ctx);
  moe.layer.route(moe.st, moe.x.get(), nullptr, moe.prm, T, ctx);
  const double moe_ms =
      median_ms(ctx, b.reps, b.warmup, [&] { moe.layer.experts_and_combine(moe.y.get(), moe.st, moe.prm, ctx); });
  // The expert GEMMs (with their SwiGLU) alone, against one dense GEMM of the same FLOPs.
  const int64_t rows = moe.st.ffn_rows();
  const ElemType tx = moe.layer.expert_type();
  const void* up = b.prec == gpu::Precision::kF32 ? static_cast<const void*>(moe.prm.up.get()) : moe.prm.up_bf16.get();
  const void* down = b.prec == gpu::Precision::kF32 ? static_cast<const void*>(moe.prm.down.get()) : moe.prm.down_bf16.get();
  gpu::gather_rows(moe.st.xr.get(), moe.st.x_in, moe.st.ffn_slot.get(), tx, rows, moe.st.W, b.D, ctx.s());
  const double gemm_ms = median_ms(ctx, b.reps, b.warmup, [&] {
    gpu::ffn_experts_forward(moe.st.h.get(), moe.st.a.get(), moe.st.o.get(), moe.st.ptrs, moe.st.xr.get(),
                             moe.st.info_host.data(), up, down, tx, b.gemm, moe.cfg, ctx);
  });
  const double flops = 6.0 * rows * b.D * b.I;
  const double d_ms = dense_ms(ctx, b, rows, 3 * b.I, b.D);
  nlohmann::json g = record(b, "expert_gemm_rate");
  g.update({{"tokens", T}, {"rows", rows}, {"experts", b.n_ffn}, {"d", b.D}, {"i", b.I}, {"expert_ms", gemm_ms},
            {"expert_tflops", flops / (gemm_ms * 1e9)}, {"dense_ms", d_ms}, {"dense_tflops", flops / (d_ms * 1e9)},
            {"share_of_dense", d_ms / gemm_ms}, {"note", "expert GEMMs include the SwiGLU between them"}});
  emit(g);
  Setup mpp(b, true, false, T, ctx);
  for (double target : fractions) {
    const double f = mpp.steer(target, T, ctx);
    mpp.layer.route(mpp.st, mpp.x.get(), nullptr, mpp.prm, T, ctx);
    const double ms =
        median_ms(ctx, b.reps, b.warmup, [&] { mpp.layer.experts_and_combine(mpp.y.get(), mpp.st, mpp.prm, ctx); });
    const double speedup = moe_ms / ms, ideal = f > 0 ? 1.0 / f : 0.0;
    nlohmann::json j = record(b, "expert_forward");
    j.update({{"tokens", T}, {"d", b.D}, {"i", b.I}, {"n_ffn", b.n_ffn}, {"zc", {b.n_zero, b.n_copy, b.n_const}},
              {"top_k", b.K}, {"fraction_target", target}, {"ffn_slot_fraction", f}, {"moe_ms", moe_ms},
              {"moepp_ms", ms}, {"speedup", speedup}, {"ideal", ideal},
              {"share_of_ideal", ideal > 0 ? speedup / ideal : 0.0}});
    emit(j);
  }
}

void run_layer(const Bench& b, GpuContext& ctx, const std::vector<int64_t>& tokens, double fraction, double dense_tflops) {
  // One layer for every token count: the first T rows of the largest input.
  Setup s(b, true, true, *std::max_element(tokens.begin(), tokens.end()), ctx);
  gpu::GpuMoeParams g = gpu::GpuMoeParams::zeros(s.cfg, ctx.s());
  gpu::GpuMoeScratch sc;
  for (int64_t T : tokens) {
    const double f = s.steer(fraction, T, ctx);
    DeviceBuffer<float> dy, dx(T * b.D);
    gpu::upload(dy, std::vector<float>(T * b.D, 1e-3f), ctx.s());
    const double fwd = median_ms(ctx, b.reps, b.warmup, [&] { s.layer.forward(s.y.get(), s.st, s.x.get(), nullptr, s.prm, T, ctx); });
    const double fwd_bwd = median_ms(ctx, b.reps, b.warmup, [&] {
      s.layer.forward(s.y.get(), s.st, s.x.get(), nullptr, s.prm, T, ctx);
      s.layer.backward(dx.get(), nullptr, g, sc, dy.get(), nullptr, s.st, s.prm, ctx);
    });
    const int64_t rows = s.st.ffn_rows(), E = s.cfg.n_experts;
    const double flops = 3.0 * (6.0 * rows * b.D * b.I + 2.0 * T * b.D * E);  // experts + router, fwd + 2x bwd
    nlohmann::json j = record(b, "layer_fwd_bwd");
    j.update({{"tokens", T}, {"d", b.D}, {"i", b.I}, {"experts", E}, {"top_k", b.K}, {"fraction_target", fraction},
              {"ffn_slot_fraction", f}, {"fwd_ms", fwd}, {"fwd_bwd_ms", fwd_bwd},
              {"fwd_bwd_tflops", flops / (fwd_bwd * 1e9)}});
    if (dense_tflops > 0) j["share_of_dense"] = flops / (fwd_bwd * 1e9) / dense_tflops;
    emit(j);
  }
}

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
                        {"--mode", "--tokens", "--tokens-list", "--fractions", "--fraction", "--precision", "--gemm",
                         "--reps", "--warmup", "--d", "--i", "--n-ffn", "--top-k", "--commit", "--dense-n",
                         "--dense-tflops"},
                        {});
  Bench b;
  const std::string mode = a.require("--mode");
  if (mode != "dense" && mode != "experts" && mode != "layer")
    throw Error("--mode: expected dense, experts or layer, got '" + mode + "'");
  b.T = a.integer("--tokens", b.T, 1, 1 << 20);
  b.D = a.integer("--d", b.D, 8, 65536);
  b.I = a.integer("--i", b.I, 8, 262144);
  b.n_ffn = a.integer("--n-ffn", b.n_ffn, 1, 256);
  b.K = a.integer("--top-k", b.K, 1, 8);
  b.reps = static_cast<int>(a.integer("--reps", b.reps, 1, 1000));
  b.warmup = static_cast<int>(a.integer("--warmup", b.warmup, 0, 100));
  b.prec = gpu::parse_precision(a.get("--precision", "bf16"), "--precision");
  b.gemm = gpu::parse_grouped_gemm_mode(a.get("--gemm", "per-expert"), "--gemm");
  b.commit = a.get("--commit", "");
  const std::vector<double> fractions = parse_list<double>(a.get("--fractions", "1.0,0.85,0.7,0.5"), "--fractions");
  const std::vector<int64_t> tokens = parse_list<int64_t>(a.get("--tokens-list", "2048,4096,16384"), "--tokens-list");
  const double fraction = parse_list<double>(a.get("--fraction", "0.85"), "--fraction")[0];
  const double dense_tflops = a.has("--dense-tflops") ? parse_list<double>(a.get("--dense-tflops", ""), "--dense-tflops")[0] : 0.0;
  const int64_t dense_n = a.integer("--dense-n", 8192, 64, 32768);
  std::string why;
  if (gpu::device_count(&why) == 0) throw Error("no CUDA device: " + why);
  b.gpu_name = gpu::device_description(0);
  GpuContext ctx;
  if (mode == "dense") run_dense(b, ctx, dense_n);
  else if (mode == "experts") run_experts(b, ctx, fractions);
  else run_layer(b, ctx, tokens, fraction, dense_tflops);
  return 0;
}

}  // namespace
}  // namespace moepp

int main(int argc, char** argv) { return moepp::gpu_cli::guarded_main("moepp_gpu_bench", moepp::run, argc, argv); }
