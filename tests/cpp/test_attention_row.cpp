// Unit tests of the fused one-row attention kernel (src/core/attention_row) against a double-precision
// reference: fp32 and bf16 keys/values, head sizes that take the AVX-512 16-key path (multiples of 16)
// and the portable loops (8, 24), key counts that are and are not multiples of 16; and the causal
// softmax row.
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "core/attention_row.h"
#include "core/half_float.h"

namespace moepp {
namespace {

// out [hd] = softmax(q K^T * scale) V in double, over the fp32 values of k and v.
std::vector<double> reference(const std::vector<float>& q, const std::vector<float>& k, const std::vector<float>& v,
                              int64_t n, int64_t hd, float scale) {
  std::vector<double> s(n), out(hd, 0.0);
  double mx = -1e300, sum = 0.0;
  for (int64_t j = 0; j < n; ++j) {
    double d = 0.0;
    for (int64_t c = 0; c < hd; ++c) d += static_cast<double>(q[c]) * k[j * hd + c];
    s[j] = d * scale;
    mx = std::max(mx, s[j]);
  }
  for (double& x : s) sum += (x = std::exp(x - mx));
  for (int64_t j = 0; j < n; ++j)
    for (int64_t c = 0; c < hd; ++c) out[c] += s[j] / sum * v[j * hd + c];
  return out;
}

class AttentionRowTest : public ::testing::TestWithParam<std::tuple<int64_t, int64_t>> {};

TEST_P(AttentionRowTest, MatchesTheReferenceInFp32AndBf16) {
  const auto [hd, n] = GetParam();
  std::mt19937 rng(static_cast<uint32_t>(hd * 1000 + n));
  std::normal_distribution<float> n01;
  std::vector<float> q(hd), k(n * hd), v(n * hd);
  for (float& x : q) x = 0.5f * n01(rng);
  for (float& x : k) x = n01(rng);
  for (float& x : v) x = n01(rng);
  const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
  std::vector<float> out(hd), s(n);
  attention_row_f32(out.data(), s.data(), q.data(), k.data(), v.data(), n, hd, scale);
  const std::vector<double> ref = reference(q, k, v, n, hd, scale);
  double psum = 0.0;
  for (int64_t j = 0; j < n; ++j) psum += s[j];
  EXPECT_NEAR(psum, 1.0, 1e-5);  // s receives the probabilities
  for (int64_t c = 0; c < hd; ++c) ASSERT_NEAR(out[c], ref[c], 2e-5) << "f32 hd " << hd << " n " << n << " c " << c;

  // bf16: the kernel widens the stored bits exactly, so the reference on the rounded values agrees as
  // closely as in fp32.
  std::vector<uint16_t> kb(k.size()), vb(v.size());
  std::vector<float> kr(k.size()), vr(v.size());
  for (size_t i = 0; i < k.size(); ++i) {
    kb[i] = f32_to_bf16(k[i]);
    vb[i] = f32_to_bf16(v[i]);
    kr[i] = bf16_to_f32(kb[i]);
    vr[i] = bf16_to_f32(vb[i]);
  }
  attention_row_bf16(out.data(), s.data(), q.data(), kb.data(), vb.data(), n, hd, scale);
  const std::vector<double> ref16 = reference(q, kr, vr, n, hd, scale);
  for (int64_t c = 0; c < hd; ++c) ASSERT_NEAR(out[c], ref16[c], 2e-5) << "bf16 hd " << hd << " n " << n << " c " << c;
}

INSTANTIATE_TEST_SUITE_P(Shapes, AttentionRowTest,
                         ::testing::Combine(::testing::Values<int64_t>(8, 16, 24, 64, 128),
                                            ::testing::Values<int64_t>(1, 15, 16, 33, 577)));

TEST(CausalSoftmaxRow, NormalisesTheVisiblePartAndZeroesTheRest) {
  std::vector<float> row = {1.0f, 2.0f, 3.0f, 100.0f, -5.0f};
  causal_softmax_row(row.data(), 3, 5);
  const double e1 = std::exp(-2.0), e2 = std::exp(-1.0), z = e1 + e2 + 1.0;
  EXPECT_NEAR(row[0], e1 / z, 1e-6);
  EXPECT_NEAR(row[1], e2 / z, 1e-6);
  EXPECT_NEAR(row[2], 1.0 / z, 1e-6);
  EXPECT_EQ(row[3], 0.0f);
  EXPECT_EQ(row[4], 0.0f);
}

}  // namespace
}  // namespace moepp
