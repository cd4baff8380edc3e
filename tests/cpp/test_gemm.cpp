// Unit tests of core/gemm's bf16 products: Bf16PackedWeights (a weight matrix packed once) against
// gemm_bf16_parallel on the plain layout, over row counts on both sides of its chunk (kMaxRows), with
// accumulate and ldc > N, and its shape checks.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

#include "core/error.h"
#include "core/gemm.h"
#include "core/half_float.h"
#include "test_util.h"

namespace moepp {
namespace {

using namespace test;

std::vector<uint16_t> random_bf16(int64_t n, std::mt19937& rng) {
  const std::vector<float> v = randn(static_cast<size_t>(n), rng, 0.5f);
  std::vector<uint16_t> b(v.size());
  for (size_t i = 0; i < v.size(); ++i) b[i] = f32_to_bf16(v[i]);
  return b;
}

TEST(Bf16PackedWeights, MatchesThePlainProduct) {
  if (!gemm_bf16_native()) GTEST_SKIP() << "oneDNN runs no native bf16 products on this CPU";
  // N and K off the packed layout's blocks (64 columns, 32 of the inner dimension): padded tails.
  const int64_t N = 130, K = 97, ldc = N + 5;
  std::mt19937 rng(3);
  const std::vector<uint16_t> B = random_bf16(N * K, rng);
  const auto packed = Bf16PackedWeights::pack(B.data(), N, K);
  ASSERT_NE(packed, nullptr) << "native bf16 products, but no packed layout";
  EXPECT_EQ(packed->rows(), N);
  EXPECT_EQ(packed->cols(), K);
  EXPECT_GE(packed->bytes(), static_cast<size_t>(N * K * 2));
  for (const int64_t M : {int64_t{1}, int64_t{17}, Bf16PackedWeights::kMaxRows, Bf16PackedWeights::kMaxRows + 3}) {
    const std::vector<uint16_t> A = random_bf16(M * K, rng);
    for (const bool acc : {false, true}) {
      std::vector<float> want(M * ldc, 0.25f), got(M * ldc, 0.25f);
      gemm_bf16_parallel(M, N, K, A.data(), B.data(), want.data(), ldc, acc);
      packed->multiply(got.data(), A.data(), M, ldc, acc);
      for (int64_t m = 0; m < M; ++m)
        for (int64_t j = 0; j < ldc; ++j) {
          const float w = want[m * ldc + j];
          if (j >= N) {  // between rows: untouched
            ASSERT_EQ(got[m * ldc + j], 0.25f) << "M=" << M << " row " << m << " column " << j;
            continue;
          }
          ASSERT_NEAR(got[m * ldc + j], w, 1e-5f * (1.0f + std::fabs(w))) << "M=" << M << " acc=" << acc << " m=" << m
                                                                           << " j=" << j;
        }
    }
  }
  std::vector<float> none(1, 7.0f);
  packed->multiply(none.data(), nullptr, 0, ldc, false);  // no rows: nothing written
  EXPECT_EQ(none[0], 7.0f);
}

TEST(Bf16PackedWeights, RejectsBadShapes) {
  const std::vector<uint16_t> b(6, 0x3f80);
  EXPECT_THROW(Bf16PackedWeights::pack(b.data(), 0, 6), Error);
  EXPECT_THROW(Bf16PackedWeights::pack(b.data(), 2, -1), Error);
  EXPECT_THROW(Bf16PackedWeights::pack(nullptr, 2, 3), Error);
  if (!gemm_bf16_native()) return;
  const auto p = Bf16PackedWeights::pack(b.data(), 2, 3);
  if (!p) return;  // no packed layout for this tiny shape
  std::vector<float> c(4);
  EXPECT_THROW(p->multiply(c.data(), b.data(), 1, 1, false), Error);  // ldc < N
  EXPECT_THROW(p->multiply(c.data(), b.data(), -1, 2, false), Error);
}

}  // namespace
}  // namespace moepp
