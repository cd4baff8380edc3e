// `moepp bench kernels`: the weight-row kernels moepp writes itself, against the alternatives in the same
// binary, measured the way decoding uses them (WeightMatrix::matmul, all OpenMP threads): today the Q4
// AVX-512 VNNI kernel (four blocks a step) vs the AVX2 kernel (core/q4_blocks.h). (An AVX-512 BF16
// kernel for BF16 rows, vdpbf16ps on input rows split into bf16 hi + lo, was measured here at 0.72x
// (0.69-0.75) the widening AVX2 loop and not kept: bench/results/kernels_bf16_rejected.jsonl.)
// The weights are the benchmark model's expert matrices (up [2 x 2816, 1024], down [1024, 2816]), by
// default 16 of each, so that one pass reads far more than any L3 cache holds, as decoding does (with
// --copies 1 the Q4 matrices stay in cache: the kernels' compute speed). Each repetition times
// one pass per kernel, alternating which goes first; reported: GB/s of weights read (median, min, max
// over the repetitions), the share of the read-bandwidth probe, and the ratio of the two kernels (median
// and range of the per-repetition ratios). Needs a quiet machine.
// With --prefetch SETTING: the streaming prefetch (core/stream_prefetch.h) of every dtype's few-row
// products, the default setting against SETTING (e.g. l1_2048, the one before), the same way.
// Also the decode step's attention (core/attention_row.h) on the benchmark model's cache (8 layers x 16
// heads of 64, 576 cached positions, `copies` such caches read in turn): the library path (sgemm for
// the 1-row scores and weighted sum, with the causal softmax between) against the fused kernel on an
// fp32 and on a bf16 cache; reported as ms per decoded token and the ratios to the library path.
#include "kernel_bench.h"

#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "bandwidth_probe.h"
#include "bench_env.h"
#include "bench_stats.h"
#include "core/attention_row.h"
#include "core/error.h"
#include "core/gemm.h"
#include "core/half_float.h"
#include "core/q4_blocks.h"
#include "core/stream_prefetch.h"
#include "infer/weight_matrix.h"

namespace moepp {
namespace {

struct Family {
  std::string name;
  WeightDType dtype;
  std::string fast;      // moepp's kernel (or setting)
  std::string baseline;  // the alternative
  std::function<void(const std::string&)> force;
  std::function<std::string()> current;
};

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// The decode step's attention over `copies` caches of the benchmark model: library path vs fused kernel.
void attention_row_bench(int reps, int copies) {
  const int64_t layers = 8 * copies, heads = 16, hd = 64, n = 576, per_head = n * hd;
  std::mt19937 rng(11);
  std::normal_distribution<float> n01;
  std::vector<float> k32(layers * heads * per_head), v32(k32.size()), q(heads * hd), out(heads * hd);
  for (float& x : k32) x = n01(rng);
  for (float& x : v32) x = n01(rng);
  for (float& x : q) x = 0.3f * n01(rng);
  std::vector<uint16_t> k16(k32.size()), v16(v32.size());
  for (size_t i = 0; i < k32.size(); ++i) {
    k16[i] = f32_to_bf16(k32[i]);
    v16[i] = f32_to_bf16(v32[i]);
  }
  const float scale = 0.125f;
  enum Path { kLibrary, kFusedF32, kFusedBF16 };
  auto pass = [&](Path path) {
    const auto t0 = std::chrono::steady_clock::now();
    for (int64_t l = 0; l < layers; ++l) {
#pragma omp parallel
      {
        thread_local std::vector<float> sc;
        sc.resize(static_cast<size_t>(n));
#pragma omp for schedule(dynamic, 1)
        for (int64_t h = 0; h < heads; ++h) {
          const size_t at = static_cast<size_t>((l * heads + h) * per_head);
          float* o = out.data() + h * hd;
          const float* qh = q.data() + h * hd;
          if (path == kLibrary) {
            sgemm(false, true, 1, n, hd, scale, qh, hd, k32.data() + at, hd, 0.0f, sc.data(), n);
            causal_softmax_row(sc.data(), n, n);
            sgemm(false, false, 1, hd, n, 1.0f, sc.data(), n, v32.data() + at, hd, 0.0f, o, hd);
          } else if (path == kFusedF32) {
            attention_row_f32(o, sc.data(), qh, k32.data() + at, v32.data() + at, n, hd, scale);
          } else {
            attention_row_bf16(o, sc.data(), qh, k16.data() + at, v16.data() + at, n, hd, scale);
          }
        }
      }
    }
    return seconds_since(t0) * 1e3 / copies;  // ms per token of the 8-layer model
  };
  for (Path p : {kLibrary, kFusedF32, kFusedBF16}) pass(p);  // warm-up
  std::vector<double> lib, f32, bf16, r32, r16;
  for (int r = 0; r < reps; ++r) {
    double t[3];
    const Path order[3][3] = {{kLibrary, kFusedF32, kFusedBF16}, {kFusedBF16, kFusedF32, kLibrary}, {kFusedF32, kLibrary, kFusedBF16}};
    for (Path p : order[r % 3]) t[p] = pass(p);
    lib.push_back(t[kLibrary]);
    f32.push_back(t[kFusedF32]);
    bf16.push_back(t[kFusedBF16]);
    r32.push_back(t[kLibrary] / t[kFusedF32]);
    r16.push_back(t[kLibrary] / t[kFusedBF16]);
  }
  nlohmann::json j = bench_environment();
  j["bench"] = "kernels";
  j["family"] = "attention_row";
  j["shape"] = "8 layers x 16 heads x hd 64, 576 cached positions";
  j["copies"] = copies;
  j["reps"] = reps;
  j["library_sgemm_ms_per_token"] = median_range(lib);
  j["fused_f32_ms_per_token"] = median_range(f32);
  j["fused_bf16_ms_per_token"] = median_range(bf16);
  j["speedup_fused_f32_vs_library"] = median_range(r32);
  j["speedup_fused_bf16_vs_library"] = median_range(r16);
  std::printf("%s\n", j.dump().c_str());
  std::fflush(stdout);
}

}  // namespace

int run_kernel_bench(int reps, int rows, int copies, const std::string& prefetch_baseline) {
  check(reps >= 1, "bench kernels: --reps must be >= 1");
  check(rows >= 1 && rows <= 512, "bench kernels: --rows must be in [1, 512]");
  check(copies >= 1 && copies <= 64, "bench kernels: --copies must be in [1, 64]");
  const int64_t D = 1024, I = 2816;
  std::mt19937 rng(7);
  std::normal_distribution<float> n01;
  std::vector<float> up(2 * I * D), down(D * I), x(rows * I), out(rows * 2 * I);
  for (float& v : up) v = 0.03f * n01(rng);
  for (float& v : down) v = 0.03f * n01(rng);
  for (float& v : x) v = n01(rng);
  const Bandwidth bw = measure_read_bandwidth();
  std::vector<Family> families;
  if (prefetch_baseline.empty()) {
    families.push_back({"q4", WeightDType::kQ4, "avx512vnni", "avx2", [](const std::string& k) { q4_force_kernel(k.c_str()); },
                        [] { return std::string(q4_kernel_name()); }});
  } else {
    const std::string base = stream_prefetch_name(parse_stream_prefetch(prefetch_baseline));  // validated first
    const std::string def = stream_prefetch_name(kDefaultStreamPrefetch);
    check(base != def, "bench kernels: --prefetch " + base + " is the default setting; name another to compare");
    for (const WeightDType d : {WeightDType::kF32, WeightDType::kBF16, WeightDType::kInt8, WeightDType::kQ4})
      families.push_back({std::string("prefetch_") + weight_dtype_name(d), d, def, base,
                          [](const std::string& k) { set_stream_prefetch(parse_stream_prefetch(k)); },
                          [] { return stream_prefetch_name(stream_prefetch()); }});
  }
  for (const Family& f : families) {
    const std::string chosen = f.current();
    if (chosen != f.fast) {
      std::fprintf(stderr, "bench kernels: %s: this CPU does not run the %s kernel; skipped\n", f.name.c_str(), f.fast.c_str());
      continue;
    }
    std::vector<WeightMatrix> mats;
    size_t bytes = 0;
    for (int64_t c = 0; c < copies; ++c) {
      mats.push_back(WeightMatrix::from_f32(up.data(), 2 * I, D, f.dtype));
      mats.push_back(WeightMatrix::from_f32(down.data(), D, I, f.dtype));
      bytes += mats[mats.size() - 2].bytes() + mats.back().bytes();
    }
    auto pass = [&](const std::string& kernel) {
      f.force(kernel);
      const auto t0 = std::chrono::steady_clock::now();
      for (const WeightMatrix& m : mats) m.matmul(out.data(), x.data(), rows);
      return static_cast<double>(bytes) / seconds_since(t0) / 1e9;
    };
    pass(f.fast);  // warm-up (page faults, thread start)
    pass(f.baseline);
    std::vector<double> fast, base, ratio;
    for (int r = 0; r < reps; ++r) {
      double a, b;
      if (r % 2 == 0) {
        a = pass(f.fast);
        b = pass(f.baseline);
      } else {
        b = pass(f.baseline);
        a = pass(f.fast);
      }
      fast.push_back(a);
      base.push_back(b);
      ratio.push_back(a / b);
    }
    f.force(chosen);
    nlohmann::json j = bench_environment();
    j["bench"] = "kernels";
    j["family"] = f.name;
    j["rows"] = rows;
    j["copies"] = copies;
    j["weights_mb"] = static_cast<double>(bytes) / 1e6;
    j["reps"] = reps;
    j["probe_gbs"] = bw.all_threads_gbs;
    j[f.fast + "_gbs"] = median_range(fast);
    j[f.baseline + "_gbs"] = median_range(base);
    j[f.fast + "_probe_share"] = median(fast) / bw.all_threads_gbs;
    j[f.baseline + "_probe_share"] = median(base) / bw.all_threads_gbs;
    j["ratio"] = median_range(ratio);
    std::printf("%s\n", j.dump().c_str());
    std::fflush(stdout);
  }
  if (rows == 1 && prefetch_baseline.empty()) attention_row_bench(reps, copies);
  return 0;
}

}  // namespace moepp
