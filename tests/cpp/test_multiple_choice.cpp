// Unit tests of multiple-choice evaluation (src/eval/multiple_choice): the harness-style split of
// context and continuation (with a fake one-token-per-character encoder and a merging one), truncation
// bookkeeping, argmax and acc_norm predictions, the standard errors, and the JSONL task reader's items
// and errors (file:line and field).
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <string>
#include <string_view>
#include <vector>

#include "core/error.h"
#include "eval/multiple_choice.h"

namespace fs = std::filesystem;
using moepp::Error;
using namespace moepp::eval;

namespace {

std::vector<int32_t> char_encoder(std::string_view s) {  // one token per byte
  return std::vector<int32_t>(s.begin(), s.end());
}

// Merges " b" into one token (id 1000), like a BPE merge across the context boundary would.
std::vector<int32_t> merging_encoder(std::string_view s) {
  std::vector<int32_t> out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == ' ' && i + 1 < s.size() && s[i + 1] == 'b') {
      out.push_back(1000);
      ++i;
    } else {
      out.push_back(static_cast<unsigned char>(s[i]));
    }
  }
  return out;
}

class ReadMcTasks : public ::testing::Test {
 protected:
  void SetUp() override {
    static int counter = 0;
    path_ = (fs::path(::testing::TempDir()) /
             ("moepp_eval_" + std::to_string(::getpid()) + "_" + std::to_string(counter++) + ".jsonl"))
                .string();
  }
  void TearDown() override { fs::remove(path_); }
  void write(const std::string& s) {
    std::ofstream f(path_, std::ios::binary);
    f << s;
  }
  // The error message of reading the file (empty when it reads).
  std::string error_of(const std::string& s) {
    write(s);
    try {
      read_mc_tasks(path_);
    } catch (const Error& e) {
      return e.what();
    }
    return "";
  }
  std::string path_;
};

}  // namespace

TEST(EncodePair, TrailingWhitespaceMovesToTheContinuation) {
  EncodedPair p = encode_pair(char_encoder, "ab  ", "c");
  EXPECT_EQ(p.context, (std::vector<int32_t>{'a', 'b'}));
  EXPECT_EQ(p.continuation, (std::vector<int32_t>{' ', ' ', 'c'}));
  p = encode_pair(char_encoder, "", "xy");
  EXPECT_TRUE(p.context.empty());
  EXPECT_EQ(p.continuation, (std::vector<int32_t>{'x', 'y'}));
  p = encode_pair(char_encoder, "a\n", " b");
  EXPECT_EQ(p.continuation, (std::vector<int32_t>{'\n', ' ', 'b'}));
}

TEST(EncodePair, SplitsTheWholeEncodingAtTheContextLength) {
  // "a b" encodes as [a, 1000]; the context "a" as [a]: continuation = whole[1:] = [1000].
  EncodedPair p = encode_pair(merging_encoder, "a ", "b");
  EXPECT_EQ(p.context, (std::vector<int32_t>{'a'}));
  EXPECT_EQ(p.continuation, (std::vector<int32_t>{1000}));
}

TEST(EncodeItem, BosDropAndErrors) {
  McItem it;
  it.context = "abcdef";
  it.choices = {"x", "xyz"};
  it.line = 3;
  McEncoded e = encode_item(char_encoder, it, 1, 100, "f.jsonl:3");
  EXPECT_EQ(e.context, (std::vector<int32_t>{1, 'a', 'b', 'c', 'd', 'e', 'f'}));
  EXPECT_EQ(e.drop, (std::vector<int64_t>{0, 0}));
  // max_len 7: inputs are 7 + 1 - 1 = 7 (fits) and 7 + 3 - 1 = 9 (drops 2).
  e = encode_item(char_encoder, it, 1, 7, "f.jsonl:3");
  EXPECT_EQ(e.drop, (std::vector<int64_t>{0, 2}));
  // A continuation longer than the model.
  try {
    encode_item(char_encoder, it, 1, 2, "f.jsonl:3");
    FAIL();
  } catch (const Error& err) {
    EXPECT_NE(std::string(err.what()).find("f.jsonl:3: choices[1]"), std::string::npos) << err.what();
  }
  // A choice absorbed into the context's last token gives no continuation.
  auto absorbing = [](std::string_view s) {
    std::vector<int32_t> v(s.begin(), s.end());
    if (s.size() > 1 && s.back() == '!') v.pop_back();
    return v;
  };
  it.choices = {"x", "!"};
  try {
    encode_item(absorbing, it, 1, 100, "f.jsonl:3");
    FAIL();
  } catch (const Error& err) {
    EXPECT_NE(std::string(err.what()).find("f.jsonl:3: choices[1]: gives no token"), std::string::npos) << err.what();
  }
}

TEST(Predict, ArgmaxFirstAndByteNormalisation) {
  EXPECT_EQ(argmax_first({-3.0, -1.0, -1.0, -2.0}), 1);
  // Sums favour the short choice; per byte, the long one.
  McScore s = predict({-2.0, -3.0}, {" a", " abcdef"});
  EXPECT_EQ(s.pred, 0);
  EXPECT_EQ(s.pred_norm, 1);
  // Bytes, not characters: "é" is 2 bytes, so -2 / 3 beats -1.8 / 2.
  s = predict({-1.8, -2.0}, {" a", " \xc3\xa9"});
  EXPECT_EQ(s.pred, 0);
  EXPECT_EQ(s.pred_norm, 1);
}

TEST(Summarize, MeansAndStandardErrors) {
  std::vector<McItem> items(4);
  std::vector<McScore> scores(4);
  const int preds[4] = {0, 1, 0, 0};
  for (int i = 0; i < 4; ++i) {
    items[i].gold = 0;
    items[i].choices = {"a", "b"};
    scores[i].pred = preds[i];
    scores[i].pred_norm = 0;
  }
  const McSummary s = summarize(items, scores);
  EXPECT_EQ(s.n, 4);
  EXPECT_DOUBLE_EQ(s.acc, 0.75);
  // sample std of {1, 0, 1, 1} = 0.5; / sqrt(4) = 0.25
  EXPECT_NEAR(s.acc_stderr, 0.25, 1e-15);
  EXPECT_DOUBLE_EQ(s.acc_norm, 1.0);
  EXPECT_DOUBLE_EQ(s.acc_norm_stderr, 0.0);
  const McSummary one = summarize({items[0]}, {scores[0]});
  EXPECT_TRUE(std::isnan(one.acc_stderr));
}

TEST_F(ReadMcTasks, ReadsItemsSkippingBlankLinesAndExtraKeys) {
  write(
      "{\"context\": \"Q\", \"choices\": [\" a\", \" b\"], \"gold\": 1, \"id\": 7}\n\n"
      "{\"context\": \"\", \"choices\": [\"x\", \"y\", \"z\"], \"gold\": 0}\r\n");
  const std::vector<McItem> items = read_mc_tasks(path_);
  ASSERT_EQ(items.size(), 2u);
  EXPECT_EQ(items[0].context, "Q");
  EXPECT_EQ(items[0].gold, 1);
  EXPECT_EQ(items[0].line, 1);
  EXPECT_EQ(items[1].choices.size(), 3u);
  EXPECT_EQ(items[1].line, 3);
  EXPECT_EQ(read_mc_tasks(path_, 1).size(), 1u);
}

TEST_F(ReadMcTasks, ErrorsNameFileLineAndField) {
  const std::string good = "{\"context\": \"Q\", \"choices\": [\" a\", \" b\"], \"gold\": 0}\n";
  struct Case {
    std::string text, needle;
  };
  const std::vector<Case> cases = {
      {good + "{not json\n", ":2: not valid JSON"},
      {"[1]\n", ":1: expected a JSON object"},
      {"{\"choices\": [\"a\", \"b\"], \"gold\": 0}\n", ":1: missing field 'context'"},
      {"{\"context\": 1, \"choices\": [\"a\", \"b\"], \"gold\": 0}\n", ":1: field 'context' must be a string"},
      {good + good + "{\"context\": \"\", \"gold\": 0}\n", ":3: missing field 'choices'"},
      {"{\"context\": \"\", \"choices\": \"ab\", \"gold\": 0}\n", ":1: field 'choices' must be an array"},
      {"{\"context\": \"\", \"choices\": [\"a\"], \"gold\": 0}\n", ":1: field 'choices' must hold at least 2"},
      {"{\"context\": \"\", \"choices\": [\"a\", null], \"gold\": 0}\n", ":1: field 'choices[1]' must be a string"},
      {"{\"context\": \"\", \"choices\": [\"\", \"b\"], \"gold\": 0}\n", ":1: field 'choices[0]' is empty"},
      {"{\"context\": \"\", \"choices\": [\"a\", \"b\"]}\n", ":1: missing field 'gold'"},
      {"{\"context\": \"\", \"choices\": [\"a\", \"b\"], \"gold\": 1.0}\n", ":1: field 'gold' must be an integer"},
      {"{\"context\": \"\", \"choices\": [\"a\", \"b\"], \"gold\": true}\n", ":1: field 'gold' must be an integer"},
      {good + "{\"context\": \"\", \"choices\": [\"a\", \"b\"], \"gold\": 2}\n",
       ":2: field 'gold' = 2 is out of range"},
      {"{\"context\": \"\", \"choices\": [\"a\", \"b\"], \"gold\": -1}\n", ":1: field 'gold' = -1 is out of range"},
      {"\n  \n", "holds no item"},
  };
  for (const Case& c : cases) {
    const std::string msg = error_of(c.text);
    EXPECT_NE(msg.find(path_), std::string::npos) << msg;
    EXPECT_NE(msg.find(c.needle), std::string::npos) << "expected '" << c.needle << "' in: " << msg;
  }
  EXPECT_THROW(read_mc_tasks(path_ + ".missing"), Error);
}

TEST_F(ReadMcTasks, LimitStillValidatesEveryLine) {
  const std::string good = "{\"context\": \"Q\", \"choices\": [\" a\", \" b\"], \"gold\": 0}\n";
  write(good + good + "{\"context\": \"Q\", \"choices\": [\" a\", \" b\"], \"gold\": 5}\n");
  try {
    read_mc_tasks(path_, 1);
    FAIL() << "expected an error for line 3";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(path_ + ":3: field 'gold'"), std::string::npos) << e.what();
  }
}
