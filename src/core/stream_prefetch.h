// Software prefetch for the kernels that stream weights once per product: decoding's few-row products
// (WeightMatrix's streaming dot products and the Q4 block kernels of core/q4_blocks.h). A setting is a
// distance (bytes ahead of the line in use) and a cache level to fill.
//
// The default, 8 KiB ahead into L2, was measured against the former 2 KiB into L1 with
// `moepp bench kernels --prefetch` (bench/results/kernels_stream_prefetch_*.jsonl): a prefetch into L1
// holds one of the core's few L1 fill buffers until its line arrives, which capped one-row BF16 and
// INT8 products below the read bandwidth.
//
// The setting is process-wide (one relaxed atomic): kernels read it once per call. Change it only
// between products (benchmarks compare settings); it is not meant for concurrent change.
#pragma once

#include <cstdint>
#include <string>
#include <type_traits>

namespace moepp {

enum class PrefetchLevel { kL1, kL2 };

struct StreamPrefetch {
  int64_t bytes;
  PrefetchLevel level;
};

inline constexpr StreamPrefetch kDefaultStreamPrefetch{8192, PrefetchLevel::kL2};

// The current setting (kDefaultStreamPrefetch unless set_stream_prefetch changed it).
StreamPrefetch stream_prefetch();

// Throws moepp::Error unless bytes is a multiple of 64 in [64, 65536].
void set_stream_prefetch(StreamPrefetch p);

// "l2_8192" for {8192, kL2}; parse_stream_prefetch reads the same form and throws moepp::Error naming
// the text for anything else.
std::string stream_prefetch_name(StreamPrefetch p);
StreamPrefetch parse_stream_prefetch(const std::string& s);

// Prefetches the line at p into level L (a compile-time level, as the instruction needs one).
template <PrefetchLevel L>
inline void prefetch_line(const void* p) {
  __builtin_prefetch(p, 0, L == PrefetchLevel::kL1 ? 3 : 2);
}

// Calls f(std::integral_constant<PrefetchLevel, level>{}): a kernel templated on the level runs with
// the level chosen at run time.
template <typename F>
inline void with_prefetch_level(PrefetchLevel level, F&& f) {
  if (level == PrefetchLevel::kL1) f(std::integral_constant<PrefetchLevel, PrefetchLevel::kL1>{});
  else f(std::integral_constant<PrefetchLevel, PrefetchLevel::kL2>{});
}

}  // namespace moepp
