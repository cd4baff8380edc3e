// Unit tests of the sliding-window arithmetic of `moepp eval ppl` (src/eval/perplexity): every position
// is scored once, Hugging Face's stop rule, stride == window, and bad arguments.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <vector>

#include "core/error.h"
#include "eval/perplexity.h"

using moepp::Error;
using namespace moepp::eval;

namespace {

// Every position in [1, n) is scored exactly once, windows are at most `window` long and in order.
void expect_covering(int64_t n, int64_t window, int64_t stride) {
  const std::vector<Window> ws = sliding_windows(n, window, stride);
  ASSERT_FALSE(ws.empty());
  std::vector<int> seen(static_cast<size_t>(n), 0);
  for (size_t i = 0; i < ws.size(); ++i) {
    const Window& w = ws[i];
    EXPECT_EQ(w.begin, static_cast<int64_t>(i) * stride) << n << " " << window << " " << stride;
    EXPECT_LE(w.end - w.begin, window);
    EXPECT_GT(w.score_from, w.begin);
    EXPECT_LT(w.score_from, w.end);
    for (int64_t p = w.score_from; p < w.end; ++p) ++seen[static_cast<size_t>(p)];
  }
  EXPECT_EQ(ws.back().end, n);
  EXPECT_EQ(seen[0], 0);
  for (int64_t p = 1; p < n; ++p) EXPECT_EQ(seen[static_cast<size_t>(p)], 1) << "position " << p;
}

}  // namespace

TEST(SlidingWindows, HfExample) {
  // n = 10, window 4, stride 2: [0,4) scores 1..3, [2,6) scores 4..5, [4,8) 6..7, [6,10) 8..9.
  const std::vector<Window> ws = sliding_windows(10, 4, 2);
  ASSERT_EQ(ws.size(), 4u);
  const int64_t want[4][3] = {{0, 4, 1}, {2, 6, 4}, {4, 8, 6}, {6, 10, 8}};
  for (size_t i = 0; i < 4; ++i) {
    EXPECT_EQ(ws[i].begin, want[i][0]);
    EXPECT_EQ(ws[i].end, want[i][1]);
    EXPECT_EQ(ws[i].score_from, want[i][2]);
  }
}

TEST(SlidingWindows, StopsAtTheWindowReachingTheEnd) {
  // n = 9, window 8, stride 4: [0,8) then [4,9) reaches the end; no third window at 8.
  const std::vector<Window> ws = sliding_windows(9, 8, 4);
  ASSERT_EQ(ws.size(), 2u);
  EXPECT_EQ(ws[1].begin, 4);
  EXPECT_EQ(ws[1].score_from, 8);
  EXPECT_EQ(ws[1].scored(), 1);
  // Shorter than one window: one window scoring everything but the first token.
  const std::vector<Window> one = sliding_windows(5, 64, 32);
  ASSERT_EQ(one.size(), 1u);
  EXPECT_EQ(one[0].end, 5);
  EXPECT_EQ(one[0].scored(), 4);
}

TEST(SlidingWindows, EveryPositionOnce) {
  for (int64_t n : {2, 3, 7, 64, 65, 100, 257})
    for (int64_t window : {2, 3, 8, 64})
      for (int64_t stride = 1; stride < window; stride += std::max<int64_t>(1, window / 5))
        expect_covering(n, window, stride);
}

TEST(SlidingWindows, StrideEqualsWindowSkipsWindowStarts) {
  // Non-overlapping windows: the first token of each window has no context and is not scored;
  // a last window of one token would score nothing and is skipped.
  const std::vector<Window> ws = sliding_windows(9, 4, 4);
  ASSERT_EQ(ws.size(), 2u);
  EXPECT_EQ(ws[0].scored(), 3);
  EXPECT_EQ(ws[1].begin, 4);
  EXPECT_EQ(ws[1].score_from, 5);
  EXPECT_EQ(ws[1].end, 8);
  const std::vector<Window> ws2 = sliding_windows(10, 4, 4);
  ASSERT_EQ(ws2.size(), 3u);
  EXPECT_EQ(ws2[2].scored(), 1);
}

TEST(SlidingWindows, BadArguments) {
  EXPECT_THROW(sliding_windows(1, 4, 2), Error);
  EXPECT_THROW(sliding_windows(10, 1, 1), Error);
  EXPECT_THROW(sliding_windows(10, 4, 0), Error);
  EXPECT_THROW(sliding_windows(10, 4, 5), Error);
}
