// Tokenizers for the tests that need real text (header-only): generated English-like training texts,
// and the TrainedTokenizerTest fixture, whose suites share one BPE tokenizer of kTestTokenizerVocab
// pieces trained on one of them when the suite starts (the text stream and engine tests).
#pragma once

#include <gtest/gtest.h>

#include <cstdint>
#include <string>

#include "test_util.h"
#include "tokenizer/tokenizer.h"

namespace moepp::test {

// The size of the fixture's tokenizer (a model of this vocabulary fits its text).
inline constexpr int kTestTokenizerVocab = 320;

// A few KB of plain English-like text (ASCII only), generated deterministically: 120 lines of twelve
// words with a year on every seventh line and a blank line after every tenth (the tokenizer tests).
inline std::string captains_log_text() {
  const char* words[] = {"the",   "ship",   "sailed", "across", "a",     "grey",   "sea",   "and",
                         "whale", "rose",   "from",   "deep",   "water", "while",  "men",   "watched",
                         "in",    "silence", "of",    "morning", "light", "Captain", "said", "nothing"};
  const int n = sizeof(words) / sizeof(words[0]);
  std::string s;
  uint32_t x = 12345;
  for (int line = 0; line < 120; ++line) {
    for (int w = 0; w < 12; ++w) {
      x = x * 1103515245u + 12345u;
      if (w) s += ' ';
      s += words[(x >> 16) % n];
    }
    s += (line % 7 == 0) ? ", 1851.\n" : ".\n";
    if (line % 10 == 9) s += "\n";
  }
  return s;
}

// 150 lines of ten words from a small sea-story vocabulary, generated deterministically.
inline std::string sea_story_text() {
  const char* words[] = {"the", "ship", "sailed", "across", "a", "grey", "sea", "and", "whale", "rose", "from",
                         "deep", "water", "while", "men", "watched", "in", "silence", "of", "morning", "light"};
  const int n = sizeof(words) / sizeof(words[0]);
  std::string s;
  uint32_t x = 777;
  for (int line = 0; line < 150; ++line) {
    for (int w = 0; w < 10; ++w) {
      x = x * 1103515245u + 12345u;
      if (w) s += ' ';
      s += words[(x >> 16) % n];
    }
    s += ".\n";
  }
  return s;
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
