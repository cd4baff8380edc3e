// Unit tests of tiled causal self-attention (src/model/attention): forward (output and logsumexp) and
// backward (every backward mode) against a naive double-precision reference over the full T x T scores,
// for tile sizes that do and do not divide T, grouped and multi-query KV heads.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <ostream>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "model/attention.h"
#include "test_util.h"

namespace moepp {
namespace {

using namespace test;

struct NaiveAttn {
  std::vector<double> out, lse, dq, dk, dv;
};

NaiveAttn naive_attention(const std::vector<float>& q, const std::vector<float>& k, const std::vector<float>& v,
                          const std::vector<float>& dout, const AttnShape& s) {
  const int64_t B = s.B, T = s.T, H = s.H, KVH = s.KVH, hd = s.hd, G = H / KVH, ldq = H * hd, ldk = KVH * hd;
  const double scale = 1.0 / std::sqrt(static_cast<double>(hd));
  NaiveAttn r;
  r.out.assign(B * T * ldq, 0.0);
  r.lse.assign(B * T * H, 0.0);
  r.dq.assign(B * T * ldq, 0.0);
  r.dk.assign(B * T * ldk, 0.0);
  r.dv.assign(B * T * ldk, 0.0);
  std::vector<double> P(T * T), dP(T * T);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < H; ++h) {
      const int64_t g = h / G;
      auto Q = [&](int64_t t, int64_t d) { return static_cast<double>(q[(b * T + t) * ldq + h * hd + d]); };
      auto K = [&](int64_t t, int64_t d) { return static_cast<double>(k[(b * T + t) * ldk + g * hd + d]); };
      auto Vv = [&](int64_t t, int64_t d) { return static_cast<double>(v[(b * T + t) * ldk + g * hd + d]); };
      auto dO = [&](int64_t t, int64_t d) { return static_cast<double>(dout[(b * T + t) * ldq + h * hd + d]); };
      for (int64_t i = 0; i < T; ++i) {
        double mx = -1e300;
        for (int64_t j = 0; j <= i; ++j) {
          double sc = 0;
          for (int64_t d = 0; d < hd; ++d) sc += Q(i, d) * K(j, d);
          P[i * T + j] = sc * scale;
          mx = std::max(mx, P[i * T + j]);
        }
        double sum = 0;
        for (int64_t j = 0; j <= i; ++j) sum += std::exp(P[i * T + j] - mx);
        r.lse[(b * T + i) * H + h] = mx + std::log(sum);
        for (int64_t j = 0; j <= i; ++j) P[i * T + j] = std::exp(P[i * T + j] - mx) / sum;
        for (int64_t d = 0; d < hd; ++d) {
          double o = 0;
          for (int64_t j = 0; j <= i; ++j) o += P[i * T + j] * Vv(j, d);
          r.out[(b * T + i) * ldq + h * hd + d] = o;
        }
      }
      for (int64_t i = 0; i < T; ++i) {
        double rowdot = 0;
        for (int64_t j = 0; j <= i; ++j) {
          double dp = 0;
          for (int64_t d = 0; d < hd; ++d) dp += dO(i, d) * Vv(j, d);
          dP[i * T + j] = dp;
          rowdot += dp * P[i * T + j];
        }
        for (int64_t j = 0; j <= i; ++j) {
          const double ds = P[i * T + j] * (dP[i * T + j] - rowdot) * scale;
          for (int64_t d = 0; d < hd; ++d) {
            r.dq[(b * T + i) * ldq + h * hd + d] += ds * K(j, d);
            r.dk[(b * T + j) * ldk + g * hd + d] += ds * Q(i, d);
            r.dv[(b * T + j) * ldk + g * hd + d] += P[i * T + j] * dO(i, d);
          }
        }
      }
    }
  return r;
}

double max_abs_diff(const std::vector<float>& a, const std::vector<double>& b) {
  double m = 0;
  for (size_t i = 0; i < a.size(); ++i) m = std::max(m, std::abs(static_cast<double>(a[i]) - b[i]));
  return m;
}

struct AttnCase {
  int64_t B, T, H, KVH, hd, bq, bk;
};

std::string case_name(const AttnCase& c) {
  std::ostringstream o;
  o << "B" << c.B << "_T" << c.T << "_H" << c.H << "_KV" << c.KVH << "_hd" << c.hd << "_bq" << c.bq << "_bk" << c.bk;
  return o.str();
}
void PrintTo(const AttnCase& c, std::ostream* os) { *os << case_name(c); }

class AttentionTiles : public ::testing::TestWithParam<AttnCase> {};

TEST_P(AttentionTiles, MatchesNaiveForwardAndBackward) {
  const AttnCase c = GetParam();
  const AttnShape s{c.B, c.T, c.H, c.KVH, c.hd};
  std::mt19937 rng(static_cast<unsigned>(c.T * 131 + c.bq * 7 + c.bk));
  const int64_t nq = c.B * c.T * c.H * c.hd, nk = c.B * c.T * c.KVH * c.hd;
  const auto q = randn(nq, rng, 1.5f), k = randn(nk, rng, 1.5f), v = randn(nk, rng), dout = randn(nq, rng);
  const NaiveAttn ref = naive_attention(q, k, v, dout, s);
  std::vector<float> out(nq), lse(c.B * c.T * c.H);
  attention_forward(out.data(), lse.data(), q.data(), k.data(), v.data(), s, {c.bq, c.bk});
  EXPECT_LT(max_abs_diff(out, ref.out), 2e-5);
  EXPECT_LT(max_abs_diff(lse, ref.lse), 2e-5);
  for (AttnBackwardMode mode : {AttnBackwardMode::kKvOuter, AttnBackwardMode::kTwoPass, AttnBackwardMode::kAuto}) {
    std::vector<float> dq(nq, 7.0f), dk(nk, 7.0f), dv(nk, 7.0f);  // overwritten, not accumulated
    attention_backward(dq.data(), dk.data(), dv.data(), dout.data(), q.data(), k.data(), v.data(), out.data(),
                       lse.data(), s, {c.bq, c.bk}, mode);
    EXPECT_LT(max_abs_diff(dq, ref.dq), 5e-5) << "mode " << static_cast<int>(mode);
    EXPECT_LT(max_abs_diff(dk, ref.dk), 5e-5) << "mode " << static_cast<int>(mode);
    EXPECT_LT(max_abs_diff(dv, ref.dv), 5e-5) << "mode " << static_cast<int>(mode);
  }
}

INSTANTIATE_TEST_SUITE_P(Shapes, AttentionTiles,
                         ::testing::Values(AttnCase{1, 1, 2, 2, 8, 64, 64},    // one token
                                           AttnCase{2, 70, 4, 4, 8, 64, 64},   // partial last tile
                                           AttnCase{2, 70, 4, 2, 8, 16, 16},   // GQA, many tiles
                                           AttnCase{1, 53, 6, 2, 12, 16, 8},   // bq > bk
                                           AttnCase{1, 53, 4, 1, 6, 5, 16},    // bq < bk, MQA
                                           AttnCase{3, 33, 2, 1, 16, 32, 32},  // T one past a tile
                                           AttnCase{1, 128, 4, 4, 8, 128, 128}),  // one tile
                         [](const ::testing::TestParamInfo<AttnCase>& i) { return case_name(i.param); });

}  // namespace
}  // namespace moepp
