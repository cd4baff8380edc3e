// Tokenizers for the tests that need real text (header-only): generated English-like training texts,
// and the TrainedTokenizerTest fixture, whose suites share one BPE tokenizer of kTestTokenizerVocab
// pieces trained on one of them when the suite starts (the text stream and engine tests).
#pragma once

#include <gtest/gtest.h>

#include <cstdint>
#include <functional>
#include <string>

#include "test_util.h"
#include "tokenizer/tokenizer.h"

namespace moepp::test {

// The size of the fixture's tokenizer (a model of this vocabulary fits its text).
inline constexpr int kTestTokenizerVocab = 320;

// `lines` lines of `per_line` words drawn from the first `n_words` of a small sea-story vocabulary by a
// linear congruential generator seeded with `seed`; line i ends with line_end(i). Deterministic.
inline std::string sea_words_text(int n_words, uint32_t seed, int lines, int per_line,
                                  const std::function<std::string(int)>& line_end) {
  static const char* const words[] = {"the",   "ship",   "sailed", "across", "a",     "grey",   "sea",   "and",
                                      "whale", "rose",   "from",   "deep",   "water", "while",  "men",   "watched",
                                      "in",    "silence", "of",    "morning", "light", "Captain", "said", "nothing"};
  std::string s;
  uint32_t x = seed;
  for (int line = 0; line < lines; ++line) {
    for (int w = 0; w < per_line; ++w) {
      x = x * 1103515245u + 12345u;
      if (w) s += ' ';
      s += words[(x >> 16) % static_cast<uint32_t>(n_words)];
    }
    s += line_end(line);
  }
  return s;
}

// A few KB of plain English-like text (ASCII only): 120 lines of twelve words from all 24 words, a year
// on every seventh line and a blank line after every tenth (the tokenizer tests).
inline std::string captains_log_text() {
  return sea_words_text(24, 12345, 120, 12, [](int line) {
    return std::string(line % 7 == 0 ? ", 1851.\n" : ".\n") + (line % 10 == 9 ? "\n" : "");
  });
}

// 150 lines of ten words from the first 21 words (no "Captain said nothing").
inline std::string sea_story_text() {
  return sea_words_text(21, 777, 150, 10, [](int) { return std::string(".\n"); });
}

// A fixture whose suite trains one tokenizer (kTestTokenizerVocab pieces, on sea_story_text()) in a
// scratch directory before its first test; tok_ is that tokenizer.
class TrainedTokenizerTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    scratch_ = new ScratchDir("moepp_trained_tokenizer");
    write_bytes(scratch_->path("train.txt"), sea_story_text());
    train_tokenizer({scratch_->path("train.txt")}, scratch_->path("tokenizer.model"), kTestTokenizerVocab);
    tok_ = new Tokenizer(scratch_->path("tokenizer.model"));
  }
  static void TearDownTestSuite() {
    delete tok_;
    tok_ = nullptr;
    delete scratch_;
    scratch_ = nullptr;
  }
  static inline ScratchDir* scratch_ = nullptr;
  static inline Tokenizer* tok_ = nullptr;
};

}  // namespace moepp::test
