// The GPU layer's benchmark (see gpu_layer_bench.h).
#include "gpu_layer_bench.h"

#include <algorithm>
#include <cmath>

#include "core/error.h"
#include "gpu/gpu_device.h"
#include "gpu/gpu_experts.h"
#include "gpu/gpu_moe_layer.h"
#include "moe/moe_params.h"

namespace moepp {
namespace {

using gpu::DeviceBuffer;
using gpu::ElemType;
using gpu::GpuContext;

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

// The fields every record carries.
nlohmann::json record(const GpuLayerBenchOptions& o, const std::string& what) {
  return {{"bench", what},
          {"commit", o.commit},
          {"gpu", gpu::device_description(0)},
          {"shape", o.shape.name},
          {"precision", gpu::precision_name(o.precision)},
          {"gemm", gpu::grouped_gemm_mode_name(o.gemm)},
          {"reps", o.reps},
          {"warmup", o.warmup}};
}

void require_device() {
  std::string why;
  if (gpu::device_count(&why) == 0) throw Error("no CUDA device: " + why);
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

// A layer of the shape with random weights (uniform, std 0.02; v std 1: the distribution only sets the
// routing and the magnitudes; the FFN experts are the same in the MoE and the MoE++ layer) and input
// x ~ N(0, 1) with x[:, 0] = 1, the bias feature of the router steering (layer_cases.h).
struct Setup {
  MoeConfig cfg;
  gpu::GpuMoeLayer layer;
  MoeParams host;
  gpu::GpuMoeParams prm;
  DeviceBuffer<float> x, y;
  gpu::GpuMoeState st;
  Setup(const GpuLayerBenchOptions& o, bool moepp, bool training, int64_t T, GpuContext& ctx)
      : cfg(config(o, moepp, training)), layer(cfg, {o.precision, o.gemm}), host(MoeParams::zeros(cfg)) {
    for (auto& [name, t] : host.named(cfg)) {
      const bool v = name.size() > 9 && name.compare(name.size() - 9, 9, ".constant") == 0;
      const float scale = std::sqrt(3.0f) * (v ? 1.0f : 0.02f);
      const std::vector<float> u = uniform(static_cast<int64_t>(t->numel()), std::hash<std::string>{}(name));
      for (size_t i = 0; i < u.size(); ++i) t->data[i] = scale * u[i];
    }
    prm = gpu::GpuMoeParams::upload(host, cfg, o.precision, ctx.s());
    std::vector<float> xs = uniform(T * cfg.hidden, 7);
    for (size_t i = 0; i + 1 < xs.size(); i += 2) {  // Box-Muller: N(0, 1) pairs from the uniforms
      const double u1 = 0.5 * (xs[i] + 1.0) + 1e-12, u2 = 0.5 * (xs[i + 1] + 1.0);
      const double r = std::sqrt(-2.0 * std::log(u1)), th = 6.283185307179586 * u2;
      xs[i] = static_cast<float>(r * std::cos(th));
      xs[i + 1] = static_cast<float>(r * std::sin(th));
    }
    for (int64_t t = 0; t < T; ++t) xs[t * cfg.hidden] = 1.0f;
    gpu::upload(x, xs, ctx.s());
    y.ensure(T * cfg.hidden);
  }
  static MoeConfig config(const GpuLayerBenchOptions& o, bool moepp, bool training) {
    MoeConfig c = make_config(o.shape, moepp);
    c.training = training;
    c.validate("bench");
    return c;
  }
  double ffn_fraction(int64_t T, GpuContext& ctx) {
    layer.route(st, x.get(), nullptr, prm, T, ctx);
    return static_cast<double>(st.ffn_rows()) / static_cast<double>(T * cfg.top_k);
  }
  // Steers the router to `target` (bisect_bias on the GPU router) and returns the measured fraction.
  double steer(double target, int64_t T, GpuContext& ctx) {
    auto at = [&](float bias) {
      for (int64_t e = cfg.n_ffn(); e < cfg.n_experts; ++e) host.wg.data[e * cfg.hidden] = bias;
      gpu::upload(prm.wg, host.wg.data, ctx.s());
      return ffn_fraction(T, ctx);
    };
    return cfg.n_zc() == 0 ? ffn_fraction(T, ctx) : at(bisect_bias(at, target));
  }
};

// Dense BF16 GEMM C [m, n] = A [m, k] · B [k, n] (fp32 accumulation) on random data: the ms of one.
double dense_ms(GpuContext& ctx, const GpuLayerBenchOptions& o, int64_t m, int64_t n, int64_t k) {
  DeviceBuffer<__nv_bfloat16> A(m * k), B(k * n), C(m * n);
  {
    DeviceBuffer<float> f;
    gpu::upload(f, uniform(m * k, 1), ctx.s());
    gpu::convert_to_bf16(A.get(), f.get(), m * k, ctx.s());
    gpu::upload(f, uniform(k * n, 2), ctx.s());
    gpu::convert_to_bf16(B.get(), f.get(), k * n, ctx.s());
    ctx.stream.synchronize();
  }
  return median_ms(ctx, o.reps, o.warmup, [&] {
    gpu::gemm(ctx.blas.get(), {false, false, m, n, k, k, n, n}, 1.0f, A.get(), ElemType::kBF16, B.get(), ElemType::kBF16,
              0.0f, C.get(), ElemType::kBF16, "dense");
  });
}

}  // namespace

double gpu_dense_bench(const GpuLayerBenchOptions& o, int64_t n, const BenchEmit& emit) {
  require_device();
  GpuContext ctx;
  const double ms = dense_ms(ctx, o, n, n, n);
  const double tflops = 2.0 * n * n * n / (ms * 1e9);
  nlohmann::json j = record(o, "dense_gemm");
  j.update({{"m", n}, {"n", n}, {"k", n}, {"ms", ms}, {"tflops", tflops}, {"note", "uniform random operands"}});
  emit(j);
  return tflops;
}

void gpu_expert_forward_bench(const GpuLayerBenchOptions& o, const std::vector<double>& fractions,
                              const BenchEmit& emit) {
  require_device();
  GpuContext ctx;
  const int64_t T = o.tokens, D = o.shape.d, I = o.shape.i;
  Setup moe(o, false, false, T, ctx);
  moe.layer.route(moe.st, moe.x.get(), nullptr, moe.prm, T, ctx);
  const double moe_ms =
      median_ms(ctx, o.reps, o.warmup, [&] { moe.layer.experts_and_combine(moe.y.get(), moe.st, moe.prm, ctx); });
  // The expert GEMMs (with their SwiGLU) alone, against one dense GEMM of the same FLOPs.
  const int64_t rows = moe.st.ffn_rows();
  const ElemType tx = moe.layer.expert_type();
  const bool f32 = o.precision == gpu::Precision::kF32;
  const void* up = f32 ? static_cast<const void*>(moe.prm.up.get()) : moe.prm.up_bf16.get();
  const void* down = f32 ? static_cast<const void*>(moe.prm.down.get()) : moe.prm.down_bf16.get();
  const double gemm_ms = median_ms(ctx, o.reps, o.warmup, [&] {
    gpu::ffn_experts_forward(moe.st.h.get(), moe.st.a.get(), moe.st.o.get(), moe.st.ptrs, moe.st.xr.get(),
                             moe.st.info_host.data(), up, down, tx, o.gemm, moe.cfg, ctx);
  });
  const double flops = 6.0 * rows * D * I;
  const double d_ms = dense_ms(ctx, o, rows, 3 * I, D);
  nlohmann::json g = record(o, "expert_gemm_rate");
  g.update({{"tokens", T}, {"rows", rows}, {"experts", o.shape.n_ffn}, {"expert_ms", gemm_ms},
            {"expert_tflops", flops / (gemm_ms * 1e9)}, {"dense_ms", d_ms}, {"dense_tflops", flops / (d_ms * 1e9)},
            {"share_of_dense", d_ms / gemm_ms}, {"note", "expert GEMMs include the SwiGLU between them"}});
  emit(g);
  Setup mpp(o, true, false, T, ctx);
  for (double target : fractions) {
    const double f = mpp.steer(target, T, ctx);
    const double ms =
        median_ms(ctx, o.reps, o.warmup, [&] { mpp.layer.experts_and_combine(mpp.y.get(), mpp.st, mpp.prm, ctx); });
    const double speedup = moe_ms / ms, ideal = f > 0 ? 1.0 / f : 0.0;
    nlohmann::json j = record(o, "expert_forward");
    j.update({{"tokens", T}, {"fraction_target", target}, {"ffn_slot_fraction", f}, {"moe_ms", moe_ms},
              {"moepp_ms", ms}, {"speedup", speedup}, {"ideal", ideal},
              {"share_of_ideal", ideal > 0 ? speedup / ideal : 0.0}});
    emit(j);
  }
}

void gpu_layer_fwd_bwd_bench(const GpuLayerBenchOptions& o, const std::vector<int64_t>& tokens, double fraction,
                             double dense_tflops, const BenchEmit& emit) {
  require_device();
  check(!tokens.empty(), "bench: no token counts");
  GpuContext ctx;
  const int64_t D = o.shape.d, I = o.shape.i;
  // One layer for every token count: the first T rows of the largest input.
  Setup s(o, true, true, *std::max_element(tokens.begin(), tokens.end()), ctx);
  gpu::GpuMoeParams g = gpu::GpuMoeParams::zeros(s.cfg, ctx.s());
  gpu::GpuMoeScratch sc;
  for (int64_t T : tokens) {
    const double f = s.steer(fraction, T, ctx);
    DeviceBuffer<float> dy, dx(T * D);
    gpu::upload(dy, std::vector<float>(T * D, 1e-3f), ctx.s());
    const double fwd =
        median_ms(ctx, o.reps, o.warmup, [&] { s.layer.forward(s.y.get(), s.st, s.x.get(), nullptr, s.prm, T, ctx); });
    const double fwd_bwd = median_ms(ctx, o.reps, o.warmup, [&] {
      s.layer.forward(s.y.get(), s.st, s.x.get(), nullptr, s.prm, T, ctx);
      s.layer.backward(dx.get(), nullptr, g, sc, dy.get(), nullptr, s.st, s.prm, ctx);
    });
    const int64_t rows = s.st.ffn_rows(), E = s.cfg.n_experts;
    const double flops = 3.0 * (6.0 * rows * D * I + 2.0 * T * D * E);  // experts + router, fwd + 2x bwd
    nlohmann::json j = record(o, "layer_fwd_bwd");
    j.update({{"tokens", T}, {"fraction_target", fraction}, {"ffn_slot_fraction", f}, {"fwd_ms", fwd},
              {"fwd_bwd_ms", fwd_bwd}, {"fwd_bwd_tflops", flops / (fwd_bwd * 1e9)}});
    if (dense_tflops > 0) j["share_of_dense"] = flops / (fwd_bwd * 1e9) / dense_tflops;
    emit(j);
  }
}

}  // namespace moepp
