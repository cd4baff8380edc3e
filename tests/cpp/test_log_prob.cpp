// Unit tests of log_prob (src/eval/log_prob): the log-softmax of one target in double, stable for large
// logits, with out-of-range targets refused; and the bits-per-byte conversion of a summed NLL.
#include <gtest/gtest.h>

#include <cmath>

#include "core/error.h"
#include "eval/log_prob.h"
#include "eval/perplexity.h"

using moepp::Error;
using namespace moepp::eval;

TEST(LogProb, MatchesLogSoftmaxAndIsStable) {
  const float logits[3] = {1.0f, 2.0f, 3.0f};
  const double z = std::log(std::exp(1.0) + std::exp(2.0) + std::exp(3.0));
  EXPECT_NEAR(log_prob(logits, 3, 0), 1.0 - z, 1e-12);
  EXPECT_NEAR(log_prob(logits, 3, 2), 3.0 - z, 1e-12);
  const float big[2] = {1000.0f, 1000.0f};
  EXPECT_NEAR(log_prob(big, 2, 1), -std::log(2.0), 1e-12);
  EXPECT_THROW(log_prob(logits, 3, 3), Error);
  EXPECT_THROW(log_prob(logits, 3, -1), Error);
  EXPECT_NEAR(bits_per_byte(std::log(2.0) * 10, 5), 2.0, 1e-12);
}
