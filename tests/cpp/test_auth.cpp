// Unit tests of the API-key checks of `moepp serve` (src/serve/auth): constant_time_equal's answers
// (equal, a difference at either end, prefixes, lengths, empty strings, NUL bytes), that its time does not
// depend on where the strings differ (a mismatch in the first byte of a 1 MiB secret takes as long as
// one in the last), and bearer_matches' reading of the Authorization header. The same check over HTTP
// is tests/python/test_serve.py (api_key_401_health_open).
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <string>

#include "serve/auth.h"

namespace moepp::serve {
namespace {

using namespace std::string_literals;

TEST(ConstantTimeEqual, AnswersLikeEquality) {
  EXPECT_TRUE(constant_time_equal("sk-abc123", "sk-abc123"));
  EXPECT_TRUE(constant_time_equal("", ""));
  EXPECT_FALSE(constant_time_equal("Sk-abc123", "sk-abc123"));  // first byte
  EXPECT_FALSE(constant_time_equal("sk-abc124", "sk-abc123"));  // last byte
  EXPECT_FALSE(constant_time_equal("sk-abc", "sk-abc123"));     // a prefix of the secret
  EXPECT_FALSE(constant_time_equal("sk-abc1234", "sk-abc123"));  // the secret is a prefix
  EXPECT_FALSE(constant_time_equal("", "sk-abc123"));
  EXPECT_FALSE(constant_time_equal("x", ""));
  EXPECT_TRUE(constant_time_equal("a\0b"s, "a\0b"s));
  EXPECT_FALSE(constant_time_equal("a\0b"s, "a\0c"s));
  EXPECT_FALSE(constant_time_equal("a"s, "a\0"s));  // the missing byte is not read as a matching 0
}

TEST(ConstantTimeEqual, TimeDoesNotDependOnWhereTheStringsDiffer) {
  const std::string secret(1 << 20, 'k');
  std::string first = secret, last = secret;
  first.front() = 'x';
  last.back() = 'x';
  auto fastest = [&](const std::string& given) {
    double best = 1e9;
    for (int rep = 0; rep < 15; ++rep) {
      const auto t0 = std::chrono::steady_clock::now();
      EXPECT_FALSE(constant_time_equal(given, secret));
      best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    }
    return best;
  };
  const double t_first = fastest(first), t_last = fastest(last);
  // An early-exit comparison would be ~10^5 times faster on the first-byte mismatch.
  EXPECT_GT(t_first, t_last / 3) << t_first << " s vs " << t_last << " s";
  EXPECT_LT(t_first, t_last * 3) << t_first << " s vs " << t_last << " s";
}

TEST(BearerMatches, ReadsTheAuthorizationHeader) {
  for (const char* h : {"Bearer sk-1", "bearer sk-1", "  BEARER \t sk-1  "}) EXPECT_TRUE(bearer_matches(h, "sk-1")) << h;
  for (const char* h : {"Bearer sk-2", "Bearer sk-1x", "Bearer", "Bearer ", "Bearersk-1", "Basic sk-1", "sk-1", "",
                        "Token sk-1"})
    EXPECT_FALSE(bearer_matches(h, "sk-1")) << h;
}

}  // namespace
}  // namespace moepp::serve
