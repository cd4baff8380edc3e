// Unit tests of incremental detokenisation (src/infer/text_stream) with a small trained tokenizer: the
// stop-string and UTF-8 helpers, the leading space of the first generated piece, UTF-8 hold-back (every
// delta is complete UTF-8), and stop strings that span tokens or never complete.
#include <gtest/gtest.h>

#include <cstdint>
#include <string>
#include <vector>

#include "infer/text_stream.h"
#include "tokenizer/tokenizer.h"
#include "tokenizer_fixtures.h"

namespace moepp {
namespace {

using namespace test;

TEST(TextStreamHelpers, HoldbackFindAndUtf8Tail) {
  EXPECT_EQ(stop_holdback("abc", {"cd"}), 1u);
  EXPECT_EQ(stop_holdback("abc", {"bcx", "cd"}), 2u);
  EXPECT_EQ(stop_holdback("abc", {"abc"}), 0u);  // a whole match is found, not held
  EXPECT_EQ(stop_holdback("abc", {"x", ""}), 0u);
  EXPECT_EQ(stop_holdback("", {"ab"}), 0u);
  EXPECT_EQ(find_stop("hello world", {"wor", "lo"}), 3u);
  EXPECT_EQ(find_stop("hello world", {"xyz"}), std::string::npos);
  EXPECT_EQ(find_stop("hello world", {"o"}, 5), 7u);
  EXPECT_EQ(incomplete_utf8_tail("a"), 0u);
  EXPECT_EQ(incomplete_utf8_tail("a\xC3"), 1u);
  EXPECT_EQ(incomplete_utf8_tail("\xE6\x97"), 2u);
  EXPECT_EQ(incomplete_utf8_tail("\xE6\x97\xA5"), 0u);
  EXPECT_EQ(incomplete_utf8_tail("\xF0\x9F\x90"), 3u);
  EXPECT_EQ(incomplete_utf8_tail("\xF0\x9F\x90\xB3"), 0u);
  EXPECT_EQ(incomplete_utf8_tail("\x80\x80"), 0u);  // never valid: not held
}

bool valid_utf8(const std::string& s) {
  size_t i = 0;
  while (i < s.size()) {
    const auto c = static_cast<unsigned char>(s[i]);
    size_t n = c < 0x80 ? 1 : (c & 0xE0) == 0xC0 ? 2 : (c & 0xF0) == 0xE0 ? 3 : (c & 0xF8) == 0xF0 ? 4 : 0;
    if (n == 0 || i + n > s.size()) return false;
    for (size_t k = 1; k < n; ++k)
      if ((static_cast<unsigned char>(s[i + k]) & 0xC0) != 0x80) return false;
    i += n;
  }
  return true;
}

class TextStreamTest : public TrainedTokenizerTest {
 protected:
  // Pushes ids one by one; returns the deltas (finish() last).
  static std::vector<std::string> run(TextStream& ts, const std::vector<int32_t>& ids) {
    std::vector<std::string> out;
    for (int32_t id : ids) out.push_back(ts.push(id));
    out.push_back(ts.finish());
    return out;
  }
  static std::string join(const std::vector<std::string>& v) {
    std::string s;
    for (const auto& x : v) s += x;
    return s;
  }
};

TEST_F(TextStreamTest, KeepsTheLeadingSpaceOfTheFirstGeneratedPiece) {
  const std::vector<int32_t> ids = tok_->encode("the ship sailed across a grey sea");
  ASSERT_GE(ids.size(), 3u);
  TextStream ts(*tok_, {}, ids[0]);  // the prompt ends with ids[0]
  const std::vector<std::string> deltas = run(ts, std::vector<int32_t>(ids.begin() + 1, ids.end()));
  const std::string whole = tok_->decode(ids), first = tok_->decode({ids[0]});
  EXPECT_EQ(join(deltas), whole.substr(first.size()));
  EXPECT_EQ(join(deltas)[0], ' ');
  EXPECT_EQ(ts.emitted(), join(deltas));
  // Without an anchor the list decodes as the tokenizer decodes it alone.
  TextStream plain(*tok_, {});
  EXPECT_EQ(join(run(plain, ids)), whole);
}

TEST_F(TextStreamTest, EmitsOnlyCompleteUtf8) {
  const std::string text = "sea \xE6\x97\xA5\xE6\x9C\xAC and \xC3\xBC\xE2\x82\xAC whale \xF0\x9F\x90\xB3!";
  const std::vector<int32_t> ids = tok_->encode(text);
  int bytes = 0;
  for (int32_t id : ids) bytes += tok_->is_byte(id);
  ASSERT_GE(bytes, 8);  // the characters outside the training text are byte pieces
  TextStream ts(*tok_, {});
  const std::vector<std::string> deltas = run(ts, ids);
  int held = 0;
  for (size_t i = 0; i + 1 < deltas.size(); ++i) {
    EXPECT_TRUE(valid_utf8(deltas[i])) << "delta " << i;
    EXPECT_EQ(deltas[i].find("\xEF\xBF\xBD"), std::string::npos) << "U+FFFD in delta " << i;
    held += deltas[i].empty();
  }
  EXPECT_GT(held, 0);
  EXPECT_EQ(join(deltas), text);
}

TEST_F(TextStreamTest, StopStringAcrossTokens) {
  const std::vector<int32_t> ids = tok_->encode("the whale rose from deep water while men watched");
  TextStream ts(*tok_, {"rose fr"});
  std::string got;
  size_t stopped_at = 0;
  for (size_t i = 0; i < ids.size(); ++i) {
    got += ts.push(ids[i]);
    EXPECT_EQ(std::string("the whale ").compare(0, got.size(), got), 0) << "emitted " << got;
    if (ts.stopped() && !stopped_at) stopped_at = i + 1;
  }
  got += ts.finish();
  EXPECT_TRUE(ts.stopped());
  EXPECT_EQ(got, "the whale ");
  // It stopped at the token that completed "rose fr", not later.
  const std::string upto = tok_->decode(std::vector<int32_t>(ids.begin(), ids.begin() + stopped_at));
  const std::string before = tok_->decode(std::vector<int32_t>(ids.begin(), ids.begin() + stopped_at - 1));
  EXPECT_NE(upto.find("rose fr"), std::string::npos);
  EXPECT_EQ(before.find("rose fr"), std::string::npos);

  // The earliest of several stops wins; a multi-byte stop string works too.
  TextStream two(*tok_, {"water", "whale"});
  EXPECT_EQ(join(run(two, ids)), "the ");
  const std::vector<int32_t> cjk = tok_->encode("sea \xE6\x97\xA5\xE6\x9C\xAC whale");
  TextStream mb(*tok_, {"\xE6\x9C\xAC"});
  EXPECT_EQ(join(run(mb, cjk)), "sea \xE6\x97\xA5");
}

TEST_F(TextStreamTest, HeldBackPrefixIsReleasedWhenTheStopDoesNotComplete) {
  const std::vector<int32_t> ids = tok_->encode("the whale rose f");
  TextStream ts(*tok_, {"rose fx"});
  std::string got;
  for (int32_t id : ids) got += ts.push(id);
  EXPECT_EQ(got, "the whale ");  // "rose f" may still become the stop string
  EXPECT_EQ(ts.finish(), "rose f");
  EXPECT_FALSE(ts.stopped());
  EXPECT_EQ(ts.finish(), "");
}

}  // namespace
}  // namespace moepp
