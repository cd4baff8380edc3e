// Unit tests of the Q4 block format and kernels (src/core/q4_blocks): the documented packing (byte j =
// weight j low nibble, weight j + 16 high nibble; the largest-magnitude weight exactly -8 scales), the
// padding of a last partial block, and every kernel this CPU runs against the portable one and against
// a double reference on the dequantised operands.
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <string>
#include <vector>
#include <utility>

#include "core/error.h"
#include "core/half_float.h"
#include "core/q4_blocks.h"

namespace moepp {
namespace {

TEST(Q4Blocks, PackingAndScaleFollowTheFormat) {
  std::vector<float> w(32);
  for (int j = 0; j < 32; ++j) w[j] = static_cast<float>(j - 16) / 2.0f;  // -8 .. 7.5; -8 has the largest magnitude
  std::vector<uint8_t> codes(16);
  std::vector<uint16_t> scales(1);
  q4_quantize_row(codes.data(), scales.data(), w.data(), 32);
  EXPECT_EQ(f16_to_f32(scales[0]), 1.0f);  // -8 / -8
  for (int j = 0; j < 16; ++j) {
    const int lo = codes[j] & 0x0F, hi = codes[j] >> 4;
    EXPECT_EQ(lo - 8, static_cast<int>(std::nearbyint(w[j]))) << j;       // weight j
    EXPECT_EQ(hi - 8, std::min(7, static_cast<int>(std::nearbyint(w[j + 16])))) << j + 16;  // weight j + 16
  }
  std::vector<float> back(32);
  q4_dequantize_row(back.data(), codes.data(), scales.data(), 32);
  EXPECT_EQ(back[0], -8.0f);
}

TEST(Q4Blocks, LastBlockIsPaddedWithZeros) {
  std::vector<float> w(40, 0.5f);
  w[35] = -1.0f;
  std::vector<uint8_t> codes(2 * 16);
  std::vector<uint16_t> scales(2);
  q4_quantize_row(codes.data(), scales.data(), w.data(), 40);
  std::vector<float> back(40);
  q4_dequantize_row(back.data(), codes.data(), scales.data(), 40);
  EXPECT_EQ(back[35], -1.0f);
  for (int j = 8; j < 16; ++j) EXPECT_EQ(codes[16 + j] & 0x0F, 8) << "padding weight " << 32 + j;
  for (int j = 0; j < 16; ++j) EXPECT_EQ(codes[16 + j] >> 4, 8) << "padding weight " << 48 + j;
  std::vector<int8_t> xq(64);
  std::vector<float> xd(2);
  std::vector<int32_t> xs(2);
  q8_quantize_row(xq.data(), xd.data(), xs.data(), w.data(), 40);
  for (int j = 40; j < 64; ++j) EXPECT_EQ(xq[j], 0) << j;
}

TEST(Q4Blocks, Bf16DequantisationIsTheRoundedFp32One) {
  std::mt19937 rng(5);
  std::normal_distribution<float> n01;
  for (const int64_t I : {32, 45, 1024, 2900}) {  // whole blocks, a padded tail, long rows
    const int64_t nb = q4_blocks(I);
    std::vector<float> w(I), f(I);
    for (float& v : w) v = 0.05f * n01(rng);
    std::vector<uint8_t> codes(nb * 16);
    std::vector<uint16_t> scales(nb), b(I + 1, 0xABCD);
    q4_quantize_row(codes.data(), scales.data(), w.data(), I);
    q4_dequantize_row(f.data(), codes.data(), scales.data(), I);
    q4_dequantize_row_bf16(b.data(), codes.data(), scales.data(), I);
    for (int64_t j = 0; j < I; ++j) ASSERT_EQ(b[j], f32_to_bf16(f[j])) << "I=" << I << " j=" << j;
    EXPECT_EQ(b[I], 0xABCD) << "wrote past the row";
  }
}

TEST(Q4Blocks, EveryKernelThisCpuRunsAgrees) {
  const std::string chosen = q4_kernel_name();
  std::mt19937 rng(3);
  std::normal_distribution<float> n01;
  // I: tails of 1-3 blocks after whole groups of four (the AVX-512 kernel's step), and none; M: the
  // kernels' row chunks of up to four, whole and split.
  for (const auto& [I, M] : std::vector<std::pair<int64_t, int64_t>>{
           {32, 3}, {64, 1}, {101, 3}, {160, 6}, {224, 5}, {1024, 3}, {1024, 8}}) {
    const int64_t O = 37, nb = q4_blocks(I);
    std::vector<float> w(O * I), x(M * I);
    for (float& v : w) v = 0.05f * n01(rng);
    for (float& v : x) v = n01(rng);
    std::vector<uint8_t> codes(O * nb * 16);
    std::vector<uint16_t> scales(O * nb);
    for (int64_t o = 0; o < O; ++o) q4_quantize_row(&codes[o * nb * 16], &scales[o * nb], &w[o * I], I);
    std::vector<int8_t> xq(M * nb * kQ4Block);
    std::vector<float> xd(M * nb);
    std::vector<int32_t> xs(M * nb);
    for (int64_t m = 0; m < M; ++m) q8_quantize_row(&xq[m * nb * kQ4Block], &xd[m * nb], &xs[m * nb], &x[m * I], I);
    // The reference: the dequantised weights and inputs, in double.
    std::vector<double> ref(M * O);
    std::vector<float> row(I);
    for (int64_t o = 0; o < O; ++o) {
      q4_dequantize_row(row.data(), &codes[o * nb * 16], &scales[o * nb], I);
      for (int64_t m = 0; m < M; ++m) {
        double s = 0;
        for (int64_t j = 0; j < I; ++j) s += static_cast<double>(row[j]) * xd[m * nb + j / kQ4Block] * xq[m * nb * kQ4Block + j];
        ref[m * O + o] = s;
      }
    }
    int ran = 0;
    for (const char* k : {"portable", "avx2", "avx512vnni"}) {
      try {
        q4_force_kernel(k);
      } catch (const Error&) {
        continue;  // this CPU cannot run it
      }
      ++ran;
      std::vector<float> out(M * O, 2.0f);
      q4_dot_rows(out.data(), O, codes.data(), scales.data(), xq.data(), xd.data(), xs.data(), M, nb, 0, O, false);
      for (int64_t i = 0; i < M * O; ++i)
        ASSERT_NEAR(out[i], ref[i], 1e-5 * (1.0 + std::fabs(ref[i]))) << k << " I=" << I << " i=" << i;
      q4_dot_rows(out.data(), O, codes.data(), scales.data(), xq.data(), xd.data(), xs.data(), M, nb, 5, 9, true);
      for (int64_t o = 5; o < 9; ++o) ASSERT_NEAR(out[o], 2.0 * ref[o], 1e-5 * (1.0 + std::fabs(ref[o]))) << k;
    }
    EXPECT_GE(ran, 1);
    q4_force_kernel(chosen.c_str());
  }
  EXPECT_THROW(q4_force_kernel("sse9"), Error);
}

}  // namespace
}  // namespace moepp
