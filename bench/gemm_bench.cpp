// `moepp bench gemm`: sgemm throughput of each backend (OpenBLAS, oneDNN, auto) at the shapes the MoE
// layer uses, side by side in one run. Two modes:
//   expert:   inside `#pragma omp parallel`, every thread runs its own independent single-threaded sgemm
//             on its own buffers (how the layer runs experts: one expert per thread); aggregate GFLOP/s.
//   parallel: one sgemm_parallel over all threads, called from serial code.
// Shapes, for (D, I) in {(768, 2048), (1536, 4096)} and T tokens in {16, 64, 128, 256, 512, 1024}:
//   up      h[T,2I]  = x[T,D]   · Wup[2I,D]^T      down    y[T,D]  = a[T,I]   · Wdown[D,I]^T
//   up_dx   dx[T,D]  = dh[T,2I] · Wup[2I,D]        down_dx da[T,I] = dy[T,D]  · Wdown[D,I]
//   up_dw   dWup     = dh^T[2I,T] · x[T,D]         down_dw dWdown  = dy^T[D,T] · a[T,I]
// All with alpha = 1, beta = 0 (the auto rule in core/gemm.cpp also looks at beta: with beta = 1 the
// A^T·B products stay on OpenBLAS). "auto" is GemmBackend::kAuto, the per-call choice of core/gemm.cpp.
// Backends are interleaved within each repetition so machine noise hits them alike; best of `reps`.
// With --bf16-packed: the bf16 products of many rows, plain layout against weights packed once
// (core/gemm.h Bf16PackedWeights; run_bf16_packed_bench below), at the benchmark model's expert shapes.
#include "gemm_bench.h"

#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "bench_env.h"
#include "bench_stats.h"
#include "core/error.h"
#include "core/gemm.h"
#include "core/half_float.h"

namespace moepp {
namespace {

struct Shape {
  const char* op;
  int64_t d, i, tokens;
  bool ta, tb;
  int64_t m, n, k;
  double flops() const { return 2.0 * static_cast<double>(m) * static_cast<double>(n) * static_cast<double>(k); }
  int64_t lda() const { return ta ? m : k; }
  int64_t ldb() const { return tb ? k : n; }
  int64_t a_size() const { return (ta ? k : m) * lda(); }
  int64_t b_size() const { return (tb ? n : k) * ldb(); }
  int64_t c_size() const { return m * n; }
};

std::vector<Shape> moe_shapes() {
  std::vector<Shape> shapes;
  const int64_t dims[][2] = {{768, 2048}, {1536, 4096}};
  const int64_t tokens[] = {16, 64, 128, 256, 512, 1024};
  for (const auto& di : dims) {
    const int64_t D = di[0], I = di[1];
    for (int64_t T : tokens) {
      shapes.push_back({"up", D, I, T, false, true, T, 2 * I, D});
      shapes.push_back({"down", D, I, T, false, true, T, D, I});
      shapes.push_back({"up_dx", D, I, T, false, false, T, D, 2 * I});
      shapes.push_back({"up_dw", D, I, T, true, false, 2 * I, D, T});
      shapes.push_back({"down_dx", D, I, T, false, false, T, I, D});
      shapes.push_back({"down_dw", D, I, T, true, false, D, I, T});
    }
  }
  return shapes;
}

struct Buffers {
  std::vector<float> a, b, c;
};

// Fills the buffers from the calling thread (first touch puts the pages near it).
void fill(Buffers& buf, const Shape& s, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  buf.a.resize(static_cast<size_t>(s.a_size()));
  buf.b.resize(static_cast<size_t>(s.b_size()));
  buf.c.assign(static_cast<size_t>(s.c_size()), 0.0f);
  for (float& v : buf.a) v = u(rng);
  for (float& v : buf.b) v = u(rng);
}

double now_s() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

void run_one(const Shape& s, Buffers& buf) {
  sgemm(s.ta, s.tb, s.m, s.n, s.k, 1.0f, buf.a.data(), s.lda(), buf.b.data(), s.ldb(), 0.0f, buf.c.data(),
        s.n);
}

// Seconds per call, `iters` back-to-back calls per thread, every thread on its own buffers.
double time_expert(const Shape& s, std::vector<Buffers>& bufs, int iters) {
  const int nt = static_cast<int>(bufs.size());
  double t0 = 0.0, t1 = 0.0;
#pragma omp parallel num_threads(nt)
  {
    Buffers& mine = bufs[static_cast<size_t>(omp_get_thread_num())];
#pragma omp barrier
#pragma omp master
    t0 = now_s();
    for (int r = 0; r < iters; ++r) run_one(s, mine);
#pragma omp barrier
#pragma omp master
    t1 = now_s();
  }
  return (t1 - t0) / iters;
}

double time_parallel(const Shape& s, Buffers& buf, int iters) {
  const double t0 = now_s();
  for (int r = 0; r < iters; ++r)
    sgemm_parallel(s.ta, s.tb, s.m, s.n, s.k, 1.0f, buf.a.data(), s.lda(), buf.b.data(), s.ldb(), 0.0f,
                   buf.c.data(), s.n);
  return (now_s() - t0) / iters;
}

// Calls per timing so that one timing lasts about `target` seconds (short shapes are repeated).
int iterations_for(double seconds_per_call, double target = 0.02) {
  if (seconds_per_call <= 0.0) return 1;
  return std::clamp(static_cast<int>(target / seconds_per_call + 0.5), 1, 10000);
}

constexpr GemmBackend kBackends[] = {GemmBackend::kOpenBLAS, GemmBackend::kOneDNN, GemmBackend::kAuto};
constexpr int kNumBackends = 3;

// Restores the process-wide backend when the bench ends (or throws).
class BackendRestore {
 public:
  BackendRestore() : saved_(gemm_backend()) {}
  ~BackendRestore() { set_gemm_backend(saved_); }
  BackendRestore(const BackendRestore&) = delete;
  BackendRestore& operator=(const BackendRestore&) = delete;

 private:
  GemmBackend saved_;
};

}  // namespace

int run_gemm_bench(bool json, int reps) {
  check(reps >= 1, "bench gemm: --reps must be >= 1 (got " + std::to_string(reps) + ")");
  BackendRestore restore;
  const int nt = std::max(1, omp_get_max_threads());
  if (!json) {
    std::printf("sgemm GFLOP/s, best of %d; expert = %d threads each running its own single-threaded sgemm "
                "(aggregate), parallel = one sgemm_parallel over %d threads\n",
                reps, nt, nt);
    std::printf("%-5s %-5s %-8s %5s %5s %5s %5s | %9s %9s %9s %6s | %9s %9s %9s %6s\n", "D", "I", "op", "T", "M",
                "N", "K", "exp:oblas", "exp:dnnl", "exp:auto", "ratio", "par:oblas", "par:dnnl", "par:auto",
                "ratio");
  }
  for (const Shape& s : moe_shapes()) {
    std::vector<Buffers> bufs(static_cast<size_t>(nt));
#pragma omp parallel num_threads(nt)
    fill(bufs[static_cast<size_t>(omp_get_thread_num())], s, 1234u + static_cast<uint32_t>(omp_get_thread_num()));

    // Warm up every backend (oneDNN JITs its kernels on first use) and size the timing loops.
    int it_exp[kNumBackends], it_par[kNumBackends];
    for (int b = 0; b < kNumBackends; ++b) {
      set_gemm_backend(kBackends[b]);
      time_expert(s, bufs, 1);
      it_exp[b] = iterations_for(time_expert(s, bufs, 1));
      time_parallel(s, bufs[0], 1);
      it_par[b] = iterations_for(time_parallel(s, bufs[0], 1));
    }
    double best_exp[kNumBackends], best_par[kNumBackends];
    std::fill(best_exp, best_exp + kNumBackends, 1e30);
    std::fill(best_par, best_par + kNumBackends, 1e30);
    for (int r = 0; r < reps; ++r) {
      for (int b = 0; b < kNumBackends; ++b) {
        set_gemm_backend(kBackends[b]);
        best_exp[b] = std::min(best_exp[b], time_expert(s, bufs, it_exp[b]));
        best_par[b] = std::min(best_par[b], time_parallel(s, bufs[0], it_par[b]));
      }
    }
    double gf_exp[kNumBackends], gf_par[kNumBackends];
    for (int b = 0; b < kNumBackends; ++b) {
      gf_exp[b] = nt * s.flops() / best_exp[b] * 1e-9;
      gf_par[b] = s.flops() / best_par[b] * 1e-9;
    }
    const double ratio_exp = gf_exp[1] / gf_exp[0], ratio_par = gf_par[1] / gf_par[0];
    if (json) {
      std::printf(
          "{\"bench\":\"gemm\",\"d\":%lld,\"i\":%lld,\"op\":\"%s\",\"tokens\":%lld,\"m\":%lld,\"n\":%lld,"
          "\"k\":%lld,\"trans_a\":%s,\"trans_b\":%s,\"threads\":%d,\"reps\":%d,"
          "\"expert_openblas_gflops\":%.2f,\"expert_onednn_gflops\":%.2f,\"expert_auto_gflops\":%.2f,"
          "\"expert_ratio_onednn_openblas\":%.3f,"
          "\"parallel_openblas_gflops\":%.2f,\"parallel_onednn_gflops\":%.2f,\"parallel_auto_gflops\":%.2f,"
          "\"parallel_ratio_onednn_openblas\":%.3f}\n",
          static_cast<long long>(s.d), static_cast<long long>(s.i), s.op, static_cast<long long>(s.tokens),
          static_cast<long long>(s.m), static_cast<long long>(s.n), static_cast<long long>(s.k),
          s.ta ? "true" : "false", s.tb ? "true" : "false", nt, reps, gf_exp[0], gf_exp[1], gf_exp[2],
          ratio_exp, gf_par[0], gf_par[1], gf_par[2], ratio_par);
    } else {
      std::printf("%-5lld %-5lld %-8s %5lld %5lld %5lld %5lld | %9.1f %9.1f %9.1f %6.2f | %9.1f %9.1f %9.1f %6.2f\n",
                  static_cast<long long>(s.d), static_cast<long long>(s.i), s.op, static_cast<long long>(s.tokens),
                  static_cast<long long>(s.m), static_cast<long long>(s.n), static_cast<long long>(s.k), gf_exp[0],
                  gf_exp[1], gf_exp[2], ratio_exp, gf_par[0], gf_par[1], gf_par[2], ratio_par);
    }
    std::fflush(stdout);
  }
  return 0;
}

int run_bf16_packed_bench(int reps) {
  check(reps >= 1, "bench gemm: --reps must be >= 1 (got " + std::to_string(reps) + ")");
  struct Weights {
    const char* op;
    int64_t n, k;
  };
  const Weights shapes[] = {{"up", 2 * 2816, 1024}, {"down", 1024, 2816}};
  const int64_t rows[] = {9, 16, 32, 64, 128, 256, 512};
  std::mt19937 rng(5);
  std::normal_distribution<float> n01;
  for (const Weights& w : shapes) {
    std::vector<uint16_t> b(static_cast<size_t>(w.n * w.k));
    for (uint16_t& v : b) v = f32_to_bf16(0.05f * n01(rng));
    const auto packed = Bf16PackedWeights::pack(b.data(), w.n, w.k);
    if (!packed) {
      std::fprintf(stderr, "bench gemm --bf16-packed: nothing is packed here (no native bf16 products in oneDNN)\n");
      return 1;
    }
    for (const int64_t M : rows) {
      std::vector<uint16_t> a(static_cast<size_t>(M * w.k));
      for (uint16_t& v : a) v = f32_to_bf16(n01(rng));
      std::vector<float> c(static_cast<size_t>(M * w.n));
      auto plain_call = [&] { gemm_bf16_parallel(M, w.n, w.k, a.data(), b.data(), c.data(), w.n, false); };
      auto packed_call = [&] { packed->multiply(c.data(), a.data(), M, w.n, false); };
      auto time_ms = [](const auto& f) {
        const int iters = 10;
        const auto t0 = std::chrono::steady_clock::now();
        for (int i = 0; i < iters; ++i) f();
        return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() * 1e3 / iters;
      };
      plain_call();  // warm-up: oneDNN makes its primitives
      packed_call();
      std::vector<double> tp, tk, ratio;
      for (int r = 0; r < reps; ++r) {
        double p, k;
        if (r % 2 == 0) {
          p = time_ms(plain_call);
          k = time_ms(packed_call);
        } else {
          k = time_ms(packed_call);
          p = time_ms(plain_call);
        }
        tp.push_back(p);
        tk.push_back(k);
        ratio.push_back(p / k);
      }
      nlohmann::json j = {{"bench", "gemm_bf16_packed"}, {"op", w.op}, {"m", M}, {"n", w.n}, {"k", w.k},
                          {"reps", reps}, {"plain_ms", median_range(tp)}, {"packed_ms", median_range(tk)},
                          {"ratio_plain_over_packed", median_range(ratio)},
                          {"packed_gflops", 2.0 * static_cast<double>(M * w.n * w.k) / median(tk) * 1e-6}};
      j.update(bench_environment());
      std::printf("%s\n", j.dump().c_str());
      std::fflush(stdout);
    }
  }
  return 0;
}

}  // namespace moepp
