// The memory read-bandwidth probe of `moepp bench infer`: the roofline that decode (a stream over the
// weights, every byte read once per token) is measured against. A buffer far larger than any L3 cache
// (1 GiB by default) is summed with vectorised loads and the decode kernels' default software prefetch
// (core/stream_prefetch.h: a reader as good as theirs; without it the probe read 2-8 % less here and
// the prefetching kernels exceeded it), once by one thread and once by all OpenMP threads (each
// summing its own contiguous slice), best of a few passes.
#pragma once

#include <cstddef>

namespace moepp {

struct Bandwidth {
  double one_thread_gbs = 0;   // GB/s (1e9 bytes) read by one thread
  double all_threads_gbs = 0;  // GB/s read by omp_get_max_threads() threads together
  int threads = 0;
  size_t buffer_bytes = 0;
};

// Allocates and touches `bytes` (first touch by the threads that later read it), then times `passes`
// passes per configuration and keeps the fastest. Takes about passes x 2 x bytes / bandwidth.
Bandwidth measure_read_bandwidth(size_t bytes = size_t{1} << 30, int passes = 3);

}  // namespace moepp
