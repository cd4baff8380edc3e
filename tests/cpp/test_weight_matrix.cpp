// Unit tests of WeightMatrix (src/infer/weight_matrix): products in F32/BF16/INT8/Q4 on both the
// streaming and the sgemm path against the dequantised weights (Q4's streaming path: against the
// dequantised weights times its 8-bit blocks of the input), the dtype names, and BF16 views of
// memory the matrix does not own (bf16_view: aligned and non-empty only), and BF16 matrices packed for
// products of many rows (pack_for_many_rows; core/gemm.h's Bf16PackedWeights).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <memory>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include "core/error.h"
#include "core/gemm.h"
#include "core/half_float.h"
#include "core/q4_blocks.h"
#include "infer/weight_matrix.h"
#include "test_util.h"

namespace moepp {
namespace {

using namespace test;

class WeightMatrixTest : public ::testing::TestWithParam<std::tuple<WeightDType, int64_t>> {};

TEST_P(WeightMatrixTest, MatchesDequantisedReference) {
  const auto [dt, M] = GetParam();
  // I = 109 = 64 + 16 + 16 + 8 + 5: every loop of the 512-bit, 256-bit and scalar code runs; O not a
  // multiple of 8 either: tails on both paths.
  const int64_t O = 83, I = 109;
  std::mt19937 rng(7);
  const std::vector<float> w = randn(O * I, rng, 0.1f), x = randn(M * I, rng);
  const WeightMatrix wm = WeightMatrix::from_f32(w.data(), O, I, dt);
  ASSERT_EQ(wm.rows(), O);
  ASSERT_EQ(wm.cols(), I);
  std::vector<float> deq(O * I);
  for (int64_t o = 0; o < O; ++o) wm.row_f32(o, deq.data() + o * I);
  // Storage error bounds: BF16 relative 2^-8; INT8 half a step of the row's scale; Q4 half a step of
  // its block's scale (max |w| / 8), except weights of the other sign than the largest beyond 7 steps
  // (codes reach -8 but only +7 steps: those are clipped), plus the scale's fp16 rounding.
  for (int64_t o = 0; o < O; ++o) {
    float amax = 0;
    for (int64_t j = 0; j < I; ++j) amax = std::max(amax, std::fabs(w[o * I + j]));
    for (int64_t j = 0; j < I; ++j) {
      float bmax = 0;
      for (int64_t k = j / kQ4Block * kQ4Block; k < std::min(I, (j / kQ4Block + 1) * kQ4Block); ++k)
        bmax = std::max(bmax, std::fabs(w[o * I + k]));
      const float e = std::fabs(deq[o * I + j] - w[o * I + j]);
      const float bound = dt == WeightDType::kF32    ? 0.0f
                          : dt == WeightDType::kBF16 ? std::fabs(w[o * I + j]) / 256.0f
                          : dt == WeightDType::kQ4   ? std::max(bmax / 16.0f, std::fabs(w[o * I + j]) - bmax * 7.0f / 8.0f) +
                                                           bmax / 1024.0f
                                                     : amax / 127.0f * 0.5f + 1e-7f;
      ASSERT_LE(e, bound) << "o=" << o << " j=" << j;
    }
  }
  // Q4's streaming path multiplies by the input's 8-bit blocks: the reference uses them too.
  std::vector<float> xr = x;
  if (dt == WeightDType::kQ4 && M <= 8) {
    const int64_t nb = q4_blocks(I);
    std::vector<int8_t> q(nb * kQ4Block);
    std::vector<float> d(nb);
    std::vector<int32_t> sum(nb);
    for (int64_t m = 0; m < M; ++m) {
      q8_quantize_row(q.data(), d.data(), sum.data(), x.data() + m * I, I);
      for (int64_t j = 0; j < I; ++j) {
        const float e = std::fabs(d[j / kQ4Block] * q[j] - x[m * I + j]);
        ASSERT_LE(e, d[j / kQ4Block] * 0.5f + 1e-6f) << "the input's 8-bit error, m=" << m << " j=" << j;
        xr[m * I + j] = d[j / kQ4Block] * q[j];
      }
    }
  }
  // With many rows, BF16, INT8 and Q4 run a bf16 GEMM where oneDNN has native AVX-512 BF16: the input
  // rows, and Q4's dequantised weights, are rounded to bf16 first (core/gemm.h; INT8's codes are exact
  // in bf16 and its scales applied afterwards); the reference does the same.
  if (dt != WeightDType::kF32 && M > 8 && gemm_bf16_native()) {
    for (float& v : xr) v = bf16_to_f32(f32_to_bf16(v));
    if (dt != WeightDType::kInt8)
      for (float& v : deq) v = bf16_to_f32(f32_to_bf16(v));
  }
  std::vector<float> out(M * O, 1.0f), acc(M * O, 1.0f);
  wm.matmul(out.data(), x.data(), M);
  wm.matmul(acc.data(), x.data(), M, /*accumulate=*/true);
  for (int64_t m = 0; m < M; ++m)
    for (int64_t o = 0; o < O; ++o) {
      double ref = 0;
      for (int64_t j = 0; j < I; ++j) ref += static_cast<double>(deq[o * I + j]) * xr[m * I + j];
      ASSERT_NEAR(out[m * O + o], ref, 1e-4) << "m=" << m << " o=" << o;
      ASSERT_NEAR(acc[m * O + o], ref + 1.0, 1e-4) << "m=" << m << " o=" << o;
    }
}

INSTANTIATE_TEST_SUITE_P(AllPaths, WeightMatrixTest,
                         ::testing::Combine(::testing::Values(WeightDType::kF32, WeightDType::kBF16, WeightDType::kInt8,
                                                              WeightDType::kQ4),
                                            ::testing::Values<int64_t>(1, 3, 5, 8, 9, 70)));

TEST(WeightMatrix, ParsesDtypeNames) {
  EXPECT_EQ(parse_weight_dtype("bf16"), WeightDType::kBF16);
  EXPECT_EQ(std::string(weight_dtype_name(WeightDType::kInt8)), "int8");
  EXPECT_EQ(parse_weight_dtype("q4"), WeightDType::kQ4);
  EXPECT_EQ(std::string(weight_dtype_name(WeightDType::kQ4)), "q4");
  EXPECT_THROW(parse_weight_dtype("fp8"), Error);
}

TEST(WeightMatrix, ViewsMustBeAlignedAndNonEmpty) {
  std::vector<uint16_t> data(7, 0x3f80);  // 1.0f in BF16
  const auto owner = std::make_shared<std::vector<uint16_t>>(data);
  const WeightMatrix m = WeightMatrix::bf16_view(owner->data(), 1, 7, owner);
  std::vector<float> row(7);
  m.row_f32(0, row.data());
  EXPECT_EQ(row, std::vector<float>(7, 1.0f));
  EXPECT_EQ(m.bytes(), 0u);
  EXPECT_EQ(m.mapped_bytes(), 14u);
  const auto* odd = reinterpret_cast<const uint8_t*>(owner->data()) + 1;
  EXPECT_THROW(WeightMatrix::bf16_view(odd, 1, 6, owner), Error);
  EXPECT_THROW(WeightMatrix::bf16_view(owner->data(), 0, 7, owner), Error);
}

// The packed copy gives the products of the plain bf16 GEMM (the same rounded inputs and weights, fp32
// accumulation; only the summation order may differ), over row counts on both sides of the packed
// primitives' chunk (Bf16PackedWeights::kMaxRows) and with accumulate; few rows keep the stored layout.
TEST(WeightMatrix, PackedBf16MatchesPlainProducts) {
  if (!gemm_bf16_native()) GTEST_SKIP() << "oneDNN runs no native bf16 products on this CPU";
  // O and I off the packed layout's blocks (64 columns, 32 pairs of the inner dimension): padded tails.
  const int64_t O = 200, I = 300;
  std::mt19937 rng(11);
  const std::vector<float> w = randn(O * I, rng, 0.1f);
  const WeightMatrix plain = WeightMatrix::from_f32(w.data(), O, I, WeightDType::kBF16);
  WeightMatrix packed = plain.owned_copy();
  const size_t before = packed.bytes();
  const size_t added = packed.pack_for_many_rows();
  ASSERT_GT(added, 0u) << "native bf16 products, but nothing was packed";
  EXPECT_EQ(packed.packed_bytes(), added);
  EXPECT_EQ(packed.bytes(), before + added);
  EXPECT_EQ(packed.pack_for_many_rows(), 0u) << "packed twice";
  EXPECT_EQ(packed.owned_copy().packed_bytes(), added) << "a copy shares the packed weights";
  for (const int64_t M : {int64_t{3}, int64_t{9}, int64_t{100}, Bf16PackedWeights::kMaxRows + 77}) {
    const std::vector<float> x = randn(M * I, rng);
    for (const bool acc : {false, true}) {
      std::vector<float> want(M * O, 0.5f), got(M * O, 0.5f);
      plain.matmul(want.data(), x.data(), M, acc);
      packed.matmul(got.data(), x.data(), M, acc);
      for (int64_t i = 0; i < M * O; ++i)
        ASSERT_NEAR(got[i], want[i], 1e-5f * (1.0f + std::fabs(want[i]))) << "M=" << M << " acc=" << acc << " i=" << i;
    }
  }
  // Other dtypes have nothing to pack.
  WeightMatrix i8 = WeightMatrix::from_f32(w.data(), O, I, WeightDType::kInt8);
  EXPECT_EQ(i8.pack_for_many_rows(), 0u);
  EXPECT_EQ(i8.packed_bytes(), 0u);
}

}  // namespace
}  // namespace moepp
