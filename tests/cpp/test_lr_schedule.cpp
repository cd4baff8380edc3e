// Unit tests of the learning-rate schedule (src/train/lr_schedule.h): linear warmup from init_lr to
// peak_lr (reached at the last warmup step), cosine and linear decay to min_lr at total_steps, the
// values at the end points and in between, min_lr from total_steps on, and the degenerate settings (no
// warmup, no decay span).
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>

#include "train/lr_schedule.h"

namespace moepp {
namespace {

// Warmup over 10 steps to 1e-3, decay to 1e-4 at step 110 (a 100-step decay span).
LrSchedule schedule(bool cosine) {
  LrSchedule s;
  s.init_lr = 1e-5f;
  s.peak_lr = 1e-3f;
  s.min_lr = 1e-4f;
  s.warmup_steps = 10;
  s.total_steps = 110;
  s.cosine = cosine;
  return s;
}

TEST(LrSchedule, WarmupRisesLinearlyFromInitToPeak) {
  const LrSchedule s = schedule(true);
  // Step k (0-based) of the warmup is init + (peak - init) * (k + 1) / warmup: the first step already
  // moves, the last one is at the peak.
  EXPECT_FLOAT_EQ(s.at(0), 1e-5f + (1e-3f - 1e-5f) / 10.0f);
  EXPECT_FLOAT_EQ(s.at(4), 1e-5f + (1e-3f - 1e-5f) * 0.5f);
  EXPECT_FLOAT_EQ(s.at(9), 1e-3f);
  for (int64_t k = 1; k < 10; ++k) EXPECT_NEAR(s.at(k) - s.at(k - 1), (1e-3f - 1e-5f) / 10.0f, 1e-9f) << k;
  // The warmup does not depend on the decay shape.
  const LrSchedule lin = schedule(false);
  for (int64_t k = 0; k < 10; ++k) EXPECT_EQ(s.at(k), lin.at(k)) << k;
}

TEST(LrSchedule, CosineDecaysFromPeakToMinLr) {
  const LrSchedule s = schedule(true);
  EXPECT_FLOAT_EQ(s.at(10), 1e-3f);  // the first decay step is the peak
  // A quarter, half and three quarters of the span: min + (peak - min) * (1 + cos(pi * frac)) / 2.
  for (const double frac : {0.25, 0.5, 0.75}) {
    const double want = 1e-4 + (1e-3 - 1e-4) * 0.5 * (1.0 + std::cos(M_PI * frac));
    EXPECT_NEAR(s.at(10 + static_cast<int64_t>(frac * 100)), want, 1e-9) << frac;
  }
  EXPECT_NEAR(s.at(60), 5.5e-4, 1e-9);  // half way: the mean of peak and min_lr
  EXPECT_GT(s.at(109), 1e-4f);  // the last decay step is still above min_lr, by (peak - min) * 2.5e-4
  EXPECT_NEAR(s.at(109), 1e-4 + (1e-3 - 1e-4) * 0.5 * (1.0 + std::cos(M_PI * 0.99)), 1e-9);
  for (int64_t k = 11; k < 110; ++k) EXPECT_LT(s.at(k), s.at(k - 1)) << k;
}

TEST(LrSchedule, LinearDecaysFromPeakToMinLr) {
  const LrSchedule s = schedule(false);
  EXPECT_FLOAT_EQ(s.at(10), 1e-3f);
  EXPECT_NEAR(s.at(35), 1e-4 + (1e-3 - 1e-4) * 0.75, 1e-9);
  EXPECT_NEAR(s.at(60), 5.5e-4, 1e-9);
  EXPECT_NEAR(s.at(85), 1e-4 + (1e-3 - 1e-4) * 0.25, 1e-9);
  // Equal steps down.
  for (int64_t k = 11; k < 110; ++k) EXPECT_NEAR(s.at(k - 1) - s.at(k), (1e-3 - 1e-4) / 100.0, 1e-9) << k;
  // Below cosine in the first half of the span, above it in the second.
  const LrSchedule c = schedule(true);
  EXPECT_LT(s.at(30), c.at(30));
  EXPECT_GT(s.at(90), c.at(90));
}

TEST(LrSchedule, MinLrFromTotalStepsOn) {
  for (const bool cosine : {true, false}) {
    const LrSchedule s = schedule(cosine);
    EXPECT_EQ(s.at(110), 1e-4f) << cosine;
    EXPECT_EQ(s.at(111), 1e-4f) << cosine;
    EXPECT_EQ(s.at(1000000), 1e-4f) << cosine;
  }
  // min_lr 0 decays to exactly 0.
  LrSchedule z = schedule(true);
  z.min_lr = 0.0f;
  EXPECT_EQ(z.at(110), 0.0f);
  EXPECT_NEAR(z.at(60), 5e-4, 1e-9);
}

TEST(LrSchedule, DegenerateSettings) {
  // No warmup: the first step is the peak.
  LrSchedule s = schedule(true);
  s.warmup_steps = 0;
  EXPECT_FLOAT_EQ(s.at(0), 1e-3f);
  EXPECT_NEAR(s.at(55), 5.5e-4, 1e-9);
  EXPECT_EQ(s.at(110), 1e-4f);
  // No decay span (total_steps <= warmup_steps): warmup, then min_lr at once.
  s = schedule(false);
  s.total_steps = 10;
  EXPECT_FLOAT_EQ(s.at(9), 1e-3f);
  EXPECT_EQ(s.at(10), 1e-4f);
  s.total_steps = 5;
  EXPECT_FLOAT_EQ(s.at(9), 1e-3f);  // the warmup still runs to its end
  EXPECT_EQ(s.at(10), 1e-4f);
}

}  // namespace
}  // namespace moepp
