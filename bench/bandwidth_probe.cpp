// The read-bandwidth probe (see bandwidth_probe.h).
#include "bandwidth_probe.h"

#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <memory>

#include "core/error.h"
#include "core/stream_prefetch.h"

namespace moepp {
namespace {

double now_s() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// Sum of n words; the simd reduction lets the compiler use the widest vector loads. Every line is
// prefetched as the decode kernels prefetch weights by default.
uint64_t sum_words(const uint64_t* p, size_t n) {
  constexpr size_t kStep = 64;  // words: 8 cache lines
  constexpr StreamPrefetch pf = kDefaultStreamPrefetch;
  uint64_t s = 0;
  size_t i = 0;
  for (; i + kStep <= n; i += kStep) {
    const char* ahead = reinterpret_cast<const char*>(p + i) + pf.bytes;
    for (size_t l = 0; l < kStep * sizeof(uint64_t); l += 64) prefetch_line<pf.level>(ahead + l);
#pragma omp simd reduction(+ : s)
    for (size_t k = i; k < i + kStep; ++k) s += p[k];
  }
  for (; i < n; ++i) s += p[i];
  return s;
}

}  // namespace

Bandwidth measure_read_bandwidth(size_t bytes, int passes) {
  check(bytes >= (size_t{1} << 20) && passes >= 1, "bandwidth probe: needs >= 1 MiB and >= 1 pass");
  const size_t n = bytes / sizeof(uint64_t);
  std::unique_ptr<uint64_t[]> buf(new uint64_t[n]);
  const int threads = omp_get_max_threads();
#pragma omp parallel for schedule(static)
  for (size_t i = 0; i < n; ++i) buf[i] = i;  // first touch: each thread's slice on its own node
  volatile uint64_t sink = 0;                 // keeps the sums alive
  Bandwidth b;
  b.threads = threads;
  b.buffer_bytes = n * sizeof(uint64_t);
  double best1 = 1e30, best_all = 1e30;
  for (int p = 0; p < passes; ++p) {
    double t0 = now_s();
    sink = sink + sum_words(buf.get(), n);
    best1 = std::min(best1, now_s() - t0);
    t0 = now_s();
    uint64_t total = 0;
#pragma omp parallel reduction(+ : total)
    {
      const int t = omp_get_thread_num(), nt = omp_get_num_threads();
      const size_t lo = n * t / nt, hi = n * (t + 1) / nt;
      total += sum_words(buf.get() + lo, hi - lo);
    }
    best_all = std::min(best_all, now_s() - t0);
    sink = sink + total;
  }
  b.one_thread_gbs = static_cast<double>(b.buffer_bytes) / best1 / 1e9;
  b.all_threads_gbs = static_cast<double>(b.buffer_bytes) / best_all / 1e9;
  return b;
}

}  // namespace moepp
