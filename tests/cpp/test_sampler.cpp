// Unit tests of the sampler (src/infer/sampler): greedy and degenerate settings pick the argmax,
// seeded draws are reproducible and follow the distribution (top-k included), the repetition penalty,
// and the rejection of out-of-range parameters.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <vector>

#include "core/error.h"
#include "infer/sampler.h"
#include "test_util.h"

namespace moepp {
namespace {

using namespace test;

TEST(Sampler, GreedyAndDegenerateSettingsPickTheArgmax) {
  std::mt19937 rng(1);
  const std::vector<float> base = randn(100, rng);
  const int32_t argmax = static_cast<int32_t>(std::max_element(base.begin(), base.end()) - base.begin());
  std::vector<SamplingParams> ps(4);
  ps[0].temperature = 0.0f;
  ps[1].top_k = 1;
  ps[2].top_p = 1e-6f;
  ps[3].min_p = 1.0f;
  for (const SamplingParams& p : ps) {
    Sampler s(p);
    for (int i = 0; i < 20; ++i) {
      std::vector<float> l = base;
      EXPECT_EQ(s.sample(l.data(), 100, {}), argmax);
    }
  }
}

TEST(Sampler, SeededDrawsAreReproducibleAndFollowTheDistribution) {
  // Two tokens with p = 0.75 / 0.25 at temperature 1.
  const float l1 = std::log(3.0f);
  SamplingParams p;
  p.seed = 42;
  Sampler a(p), b(p);
  int ones = 0;
  for (int i = 0; i < 4000; ++i) {
    std::vector<float> x = {0.0f, l1}, y = x;
    const int32_t ta = a.sample(x.data(), 2, {}), tb = b.sample(y.data(), 2, {});
    ASSERT_EQ(ta, tb);
    ones += ta == 1;
  }
  EXPECT_NEAR(ones / 4000.0, 0.75, 0.03);
  // top-k 2 of 3 never draws the least likely token.
  p.top_k = 2;
  Sampler k(p);
  for (int i = 0; i < 500; ++i) {
    std::vector<float> x = {1.0f, 0.5f, -0.2f};
    EXPECT_NE(k.sample(x.data(), 3, {}), 2);
  }
}

TEST(Sampler, RepetitionPenaltyDemotesSeenTokens) {
  SamplingParams p;
  p.temperature = 0.0f;
  p.repetition_penalty = 2.0f;
  Sampler s(p);
  std::vector<float> x = {1.0f, 0.8f, -0.5f};
  EXPECT_EQ(s.sample(x.data(), 3, {0, 0}), 1);  // 1.0 / 2 < 0.8
  EXPECT_FLOAT_EQ(x[0], 0.5f);
  std::vector<float> y = {-0.1f, -0.15f};
  EXPECT_EQ(s.sample(y.data(), 2, {0}), 1);  // -0.1 * 2 < -0.15
}

TEST(Sampler, RejectsOutOfRangeParameters) {
  auto bad = [](auto set) {
    SamplingParams p;
    set(p);
    EXPECT_THROW(Sampler{p}, Error);
  };
  bad([](SamplingParams& p) { p.temperature = -1.0f; });
  bad([](SamplingParams& p) { p.top_k = -2; });
  bad([](SamplingParams& p) { p.top_p = 0.0f; });
  bad([](SamplingParams& p) { p.top_p = 1.5f; });
  bad([](SamplingParams& p) { p.min_p = -0.1f; });
  bad([](SamplingParams& p) { p.repetition_penalty = 0.0f; });
  bad([](SamplingParams& p) { p.temperature = NAN; });
}

}  // namespace
}  // namespace moepp
