// `moepp bench layer`: vanilla top-2 MoE vs MoE++ at the paper's layer shapes, side by side in one run.
// The MoE++ router is biased (a constant input feature x[:, 0] = 1 and a bisected weight on it for the
// zero-computation experts) so that a chosen fraction of the slots reaches FFN experts. Prints one JSON
// object per case; times are best-of-reps; ratios are what to compare across machines.
#include "layer_bench.h"

#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>

#include "core/error.h"
#include "core/gemm.h"
#include "bench_env.h"
#include "json_command.h"
#include "cpu_router_bias.h"
#include "layer_cases.h"
#include "moe/ffn_experts.h"
#include "moe/moe_layer.h"
#include "moe/router.h"
#ifdef MOEPP_HAVE_CUDA
#include "gpu/gpu_layer_bench.h"
#endif

namespace moepp {
namespace {

double now_ms() {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

template <class F>
double best_ms(int reps, F&& f) {
  f();  // warm-up (page faults, buffers)
  double best = 1e300;
  for (int r = 0; r < reps; ++r) {
    const double t0 = now_ms();
    f();
    best = std::min(best, now_ms() - t0);
  }
  return best;
}

struct Timing {
  double fwd_ms = 0, fwd_bwd_ms = 0;
  int64_t ffn_rows = 0, slots = 0;
};

Timing time_layer(const MoeConfig& c, const MoeParams& p, const Tensor& x, int reps, bool backward) {
  MoeLayer layer(c);
  MoeForwardState st;
  MoeBackwardScratch sc;
  MoeParams g = MoeParams::zeros(c);
  Tensor y, z, dx;
  Tensor dy({x.shape[0], c.hidden});
  std::mt19937 rng(7);
  std::normal_distribution<float> n01;
  for (float& v : dy.data) v = n01(rng);
  Timing t;
  t.fwd_ms = best_ms(reps, [&] { layer.forward(y, z, st, x, nullptr, p); });
  t.ffn_rows = st.ffn_rows();
  t.slots = static_cast<int64_t>(st.ids.size());
  if (backward)
    t.fwd_bwd_ms = best_ms(reps, [&] {
      layer.forward(y, z, st, x, nullptr, p);
      layer.backward(dx, nullptr, g, sc, dy, nullptr, st, p);
    });
  return t;
}

// One dense GEMM pair with the same FLOPs as `rows` FFN rows ([rows, D] x [D, 2I], [rows, I] x [I, D]).
double dense_ms(const MoeConfig& c, int64_t rows, int reps) {
  const int64_t D = c.hidden, I = c.intermediate;
  std::vector<float> a(rows * D, 0.01f), w1(2 * I * D, 0.01f), h(rows * 2 * I), w2(D * I, 0.01f), o(rows * D);
  return best_ms(reps, [&] {
    sgemm_parallel(false, true, rows, 2 * I, D, 1.0f, a.data(), D, w1.data(), D, 0.0f, h.data(), 2 * I);
    sgemm_parallel(false, true, rows, D, I, 1.0f, h.data(), 2 * I, w2.data(), I, 0.0f, o.data(), D);
  });
}

// Runs bench/torch_layer_eager.py (the released code's approach in PyTorch eager) with its fastest
// thread setting here (torch 1 thread, its OpenBLAS on all cores); empty on failure.
nlohmann::json run_torch(const ShapeCase& s, bool moepp, double fraction, int tokens, int reps) {
  std::ostringstream cmd;
  cmd << "/usr/bin/python3 " << MOEPP_SOURCE_DIR << "/bench/torch_layer_eager.py --d " << s.d << " --i " << s.i
      << " --n-ffn " << s.n_ffn << " --n-zero " << (moepp ? s.n_zero : 0) << " --n-copy " << (moepp ? s.n_copy : 0)
      << " --n-const " << (moepp ? s.n_const : 0) << " --tokens " << tokens << " --ffn-fraction " << fraction
      << " --threads 1 --blas-threads " << omp_get_max_threads() << " --reps " << reps << " --backward 2>/dev/null";
  return run_json_command(cmd.str());
}

}  // namespace

// --device cuda: the GPU layer's expert forward (MoE++ vs MoE at each fraction, and the expert GEMMs
// against dense cuBLAS) and its forward + backward at each fraction, per shape.
int run_gpu_layer_bench(const LayerBenchOptions& opt, const std::vector<ShapeCase>& shapes,
                        const std::vector<double>& fractions) {
#ifdef MOEPP_HAVE_CUDA
  check(!opt.torch, "bench layer: --torch runs on the CPU; scripts/gpu_check.sh runs the eager PyTorch layer on the GPU");
  const BenchEmit emit = [&](const nlohmann::json& j) {
    if (opt.json) {
      std::printf("%s\n", j.dump().c_str());
    } else if (j["bench"] == "expert_forward") {
      std::printf("%-15s %s ffn %.2f  moe %7.3f ms  moe++ %7.3f ms  speedup %.2f (ideal %.2f)\n",
                  j["shape"].get<std::string>().c_str(), j["gemm"].get<std::string>().c_str(),
                  j["ffn_slot_fraction"].get<double>(), j["moe_ms"].get<double>(), j["moepp_ms"].get<double>(),
                  j["speedup"].get<double>(), j["ideal"].get<double>());
    } else if (j["bench"] == "expert_gemm_rate") {
      std::printf("%-15s expert GEMMs %.0f TFLOP/s, dense %.0f TFLOP/s\n", j["shape"].get<std::string>().c_str(),
                  j["expert_tflops"].get<double>(), j["dense_tflops"].get<double>());
    } else {
      std::printf("%-15s ffn %.2f  layer fwd %7.3f ms  fwd+bwd %7.3f ms  %.0f TFLOP/s\n",
                  j["shape"].get<std::string>().c_str(), j["ffn_slot_fraction"].get<double>(),
                  j["fwd_ms"].get<double>(), j["fwd_bwd_ms"].get<double>(), j["fwd_bwd_tflops"].get<double>());
    }
    std::fflush(stdout);
  };
  for (const ShapeCase& s : shapes) {
    GpuLayerBenchOptions o;
    o.shape = s;
    o.tokens = opt.tokens;
    o.reps = opt.reps;
    o.warmup = 1;
    o.precision = gpu::parse_precision(opt.precision, "bench layer: --precision");
    o.gemm = gpu::parse_grouped_gemm_mode(opt.gemm, "bench layer: --gemm");
    gpu_expert_forward_bench(o, fractions, emit);
    for (double f : fractions) gpu_layer_fwd_bwd_bench(o, {opt.tokens}, f, 0.0, emit);
  }
  return 0;
#else
  (void)opt, (void)shapes, (void)fractions;
  throw Error("bench layer: --device cuda: this moepp was built without CUDA (CMake found no nvcc)");
#endif
}

int run_layer_bench(const LayerBenchOptions& opt) {
  check(opt.reps >= 1, "bench layer: --reps must be >= 1");
  check(opt.tokens >= 1, "bench layer: --tokens must be >= 1");
  check(opt.device == "cpu" || opt.device == "cuda", "bench layer: --device must be cpu or cuda, got '" + opt.device + "'");
  const std::vector<ShapeCase> shapes = shapes_named(opt.cases, "bench layer");
  const std::vector<double> fractions = fractions_named(opt.fractions, "bench layer");
  if (opt.device == "cuda") return run_gpu_layer_bench(opt, shapes, fractions);
  const int T = opt.tokens;
  for (const ShapeCase& s : shapes) {
    const MoeConfig vc = make_config(s, false), pc = make_config(s, true);
    MoeParams vp = MoeParams::zeros(vc), pp = MoeParams::zeros(pc);
    vp.init_random(vc, 1, 0.02f);
    pp.init_random(pc, 1, 0.02f);
    for (int64_t e = 0; e < vc.n_ffn(); ++e) {  // the same FFN experts in both layers
      pp.up[e] = vp.up[e];
      pp.down[e] = vp.down[e];
    }
    Tensor x({T, s.d});
    std::mt19937 rng(3);
    std::normal_distribution<float> n01;
    for (float& v : x.data) v = n01(rng);
    for (int64_t t = 0; t < T; ++t) x.data[t * s.d] = 1.0f;  // bias feature
    const Timing vt = time_layer(vc, vp, x, opt.reps, true);
    nlohmann::json torch_moe;
    if (opt.torch) torch_moe = run_torch(s, false, 1.0, T, opt.reps);
    for (double target : fractions) {
      const float b = bias_for_fraction(pc, pp, x, target);
      for (int64_t e = pc.n_ffn(); e < pc.n_experts; ++e) pp.wg.data[e * s.d] = b;
      const Timing pt = time_layer(pc, pp, x, opt.reps, true);
      const double frac = static_cast<double>(pt.ffn_rows) / static_cast<double>(pt.slots);
      const double flops = ffn_forward_flops(pt.ffn_rows, pc);
      const double dms = dense_ms(pc, pt.ffn_rows, opt.reps);
      nlohmann::json r = {
          {"bench", "layer"},
          {"shape", s.name},
          {"tokens", T},
          {"threads", omp_get_max_threads()},
          {"gemm_backend", gemm_backend_name(gemm_backend())},
          {"gemm_auto_rule", gemm_auto_rule()},
          {"target_ffn_slot_fraction", target},
          {"ffn_slot_fraction", frac},
          {"moe_ms", vt.fwd_ms},
          {"moepp_ms", pt.fwd_ms},
          {"speedup", vt.fwd_ms / pt.fwd_ms},
          {"ideal_speedup", 1.0 / frac},
          {"speedup_vs_ideal", (vt.fwd_ms / pt.fwd_ms) * frac},
          {"moe_fwd_bwd_ms", vt.fwd_bwd_ms},
          {"moepp_fwd_bwd_ms", pt.fwd_bwd_ms},
          {"fwd_bwd_speedup", vt.fwd_bwd_ms / pt.fwd_bwd_ms},
          {"expert_gflops", flops / (pt.fwd_ms * 1e6)},
          {"dense_sgemm_gflops", flops / (dms * 1e6)},
          {"expert_vs_dense", dms / pt.fwd_ms},
      };
      if (opt.torch) {
        const nlohmann::json tp = run_torch(s, true, target, T, opt.reps);
        if (!tp.is_null() && tp.contains("fwd_bwd_ms")) {
          r["torch_eager_fwd_ms"] = tp["fwd_ms"];
          r["torch_eager_fwd_bwd_ms"] = tp["fwd_bwd_ms"];
          r["torch_eager_ffn_slot_fraction"] = tp.value("ffn_slot_fraction", 0.0);
          r["vs_torch_fwd"] = tp["fwd_ms"].get<double>() / pt.fwd_ms;
          r["vs_torch_fwd_bwd"] = tp["fwd_bwd_ms"].get<double>() / pt.fwd_bwd_ms;
        } else {
          r["torch_eager_error"] = "bench/torch_layer_eager.py failed";
        }
        if (!torch_moe.is_null() && torch_moe.contains("fwd_bwd_ms")) {
          r["torch_eager_moe_fwd_bwd_ms"] = torch_moe["fwd_bwd_ms"];
          r["moe_vs_torch_fwd_bwd"] = torch_moe["fwd_bwd_ms"].get<double>() / vt.fwd_bwd_ms;
        }
      }
      r.update(bench_environment());
      if (opt.json) {
        std::printf("%s\n", r.dump().c_str());
      } else {
        std::printf("%-15s ffn %.2f  moe %8.1f ms  moe++ %8.1f ms  speedup %.2f (ideal %.2f)  expert %.0f GFLOP/s (dense %.0f)\n",
                    s.name.c_str(), frac, vt.fwd_ms, pt.fwd_ms, vt.fwd_ms / pt.fwd_ms, 1.0 / frac,
                    flops / (pt.fwd_ms * 1e6), flops / (dms * 1e6));
      }
      std::fflush(stdout);
    }
  }
  return 0;
}

}  // namespace moepp
