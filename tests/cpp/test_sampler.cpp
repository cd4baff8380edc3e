// Unit tests of the sampler (src/infer/sampler): greedy and degenerate settings pick the argmax,
// seeded draws are reproducible and follow the distribution (top-k included), the repetition penalty,
// the presence and frequency penalties, token_logprobs,
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

TEST(Sampler, PresenceAndFrequencyPenaltiesCountGeneratedTokensOnly) {
  SamplingParams p;
  p.temperature = 0.0f;
  p.presence_penalty = 0.5f;
  p.frequency_penalty = 0.25f;
  Sampler s(p);
  // history: prompt {0, 0, 0} (not counted), generated {1, 1, 2}: OpenAI's formula
  // logit[t] -= c[t] * frequency + (c[t] > 0) * presence.
  std::vector<float> x = {1.0f, 1.0f, 1.0f, 0.9f};
  EXPECT_EQ(s.sample(x.data(), 4, {0, 0, 0, 1, 1, 2}, 3), 0);
  EXPECT_FLOAT_EQ(x[0], 1.0f);
  EXPECT_FLOAT_EQ(x[1], 1.0f - 2 * 0.25f - 0.5f);
  EXPECT_FLOAT_EQ(x[2], 1.0f - 0.25f - 0.5f);
  EXPECT_FLOAT_EQ(x[3], 0.9f);
  // Negative values favour repeats.
  p.presence_penalty = -2.0f;
  p.frequency_penalty = 0.0f;
  Sampler r(p);
  std::vector<float> y = {1.0f, 0.0f};
  EXPECT_EQ(r.sample(y.data(), 2, {0, 1}, 1), 1);
  EXPECT_FLOAT_EQ(y[1], 2.0f);
}

TEST(Sampler, TokenLogprobsAreTheLogSoftmax) {
  const std::vector<float> l = {0.5f, 2.0f, -1.0f, 2.0f, 0.0f};
  double z = 0.0;
  for (float x : l) z += std::exp(static_cast<double>(x));
  const TokenLogprobs r = token_logprobs(l.data(), 5, 4, 3);
  EXPECT_EQ(r.chosen.token, 4);
  EXPECT_NEAR(r.chosen.logprob, 0.0 - std::log(z), 1e-6);
  ASSERT_EQ(r.top.size(), 3u);
  EXPECT_EQ(r.top[0].token, 1);  // ties by id
  EXPECT_EQ(r.top[1].token, 3);
  EXPECT_EQ(r.top[2].token, 0);
  EXPECT_NEAR(r.top[2].logprob, 0.5 - std::log(z), 1e-6);
  EXPECT_EQ(token_logprobs(l.data(), 5, 0, 0).top.size(), 0u);
  EXPECT_EQ(token_logprobs(l.data(), 5, 0, 20).top.size(), 5u);  // k clamped to V
  EXPECT_THROW(token_logprobs(l.data(), 5, 5, 1), Error);
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
  bad([](SamplingParams& p) { p.presence_penalty = 2.5f; });
  bad([](SamplingParams& p) { p.frequency_penalty = -2.5f; });
  bad([](SamplingParams& p) { p.frequency_penalty = NAN; });
}

}  // namespace
}  // namespace moepp
