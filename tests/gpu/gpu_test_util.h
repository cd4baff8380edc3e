// Helpers of the GPU layer's tests (tests/gpu): the skip when no device is present, random fills, and
// the comparison bound of fp32 device results against host references.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "gpu/gpu_device.h"

namespace moepp::gpu::test {

// True (after printing "no GPU: skipped (<why>)") when this process sees no CUDA device.
inline bool no_gpu() {
  std::string why;
  if (device_count(&why) > 0) return false;
  std::printf("no GPU: skipped (%s)\n", why.c_str());
  return true;
}

inline std::vector<float> randn(size_t n, uint64_t seed, float scale = 1.0f) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> d(0.0f, scale);
  std::vector<float> v(n);
  for (float& x : v) x = d(rng);
  return v;
}

// max|a - b| / max(1, max|b|): the bound of the parity tests (1e-5 for fp32).
inline double rel_error(const std::vector<float>& a, const std::vector<float>& b) {
  EXPECT_EQ(a.size(), b.size());
  double err = 0.0, scale = 1.0;
  for (size_t i = 0; i < std::min(a.size(), b.size()); ++i) {
    err = std::max(err, std::fabs(static_cast<double>(a[i]) - b[i]));
    scale = std::max(scale, std::fabs(static_cast<double>(b[i])));
  }
  return err / scale;
}

}  // namespace moepp::gpu::test

// Skips the test (GTEST_SKIP, visible as "no GPU: skipped") when there is no device.
#define MOEPP_REQUIRE_GPU()                                   \
  do {                                                        \
    if (::moepp::gpu::test::no_gpu()) GTEST_SKIP() << "no GPU: skipped"; \
  } while (0)
