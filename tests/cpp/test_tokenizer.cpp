// Tests for tokenizer/: train a tiny BPE tokenizer on a few KB of generated text (fast), exact
// encode/decode round trips (byte fallback for characters never seen in training: emoji, CJK,
// control bytes), the special ids, determinism of training, and the moepp::Error cases (missing or
// corrupt model, bad inputs, bad ids). The `moepp tokenizer` CLI is test_tokenizer_command.cpp.
#include <gtest/gtest.h>

#include <filesystem>
#include <string>
#include <vector>

#include "core/error.h"
#include "tokenizer/tokenizer.h"
#include "test_util.h"
#include "tokenizer_fixtures.h"

namespace fs = std::filesystem;
using moepp::Error;
using moepp::Tokenizer;
using namespace moepp::test;

namespace {

class TokenizerTest : public ::testing::Test {
 protected:
  // One directory for the whole suite: the tokenizer is trained once.
  static void SetUpTestSuite() {
    scratch_ = new ScratchDir("moepp_tok");
    write_bytes(path("train.txt"), captains_log_text());
    moepp::train_tokenizer({path("train.txt")}, model(), 320);
  }
  static void TearDownTestSuite() {
    delete scratch_;
    scratch_ = nullptr;
  }
  static std::string model() { return (scratch_->dir() / "tok" / "tokenizer.model").string(); }
  static std::string path(const std::string& name) { return scratch_->path(name); }
  static ScratchDir* scratch_;
};
ScratchDir* TokenizerTest::scratch_ = nullptr;

TEST_F(TokenizerTest, SpecialIdsAndVocab) {
  const Tokenizer tok(model());
  EXPECT_EQ(tok.vocab_size(), 320);
  EXPECT_EQ(tok.pad_id(), 0);
  EXPECT_EQ(tok.bos_id(), 1);
  EXPECT_EQ(tok.eos_id(), 2);
  EXPECT_EQ(tok.unk_id(), 3);
  EXPECT_EQ(tok.id_to_piece(1), "<s>");
  EXPECT_EQ(tok.id_to_piece(2), "</s>");
  int bytes = 0;
  for (int32_t i = 0; i < tok.vocab_size(); ++i) bytes += tok.is_byte(i);
  EXPECT_EQ(bytes, 256);  // byte fallback pieces <0x00> .. <0xFF>
}

TEST_F(TokenizerTest, RoundTripSeenText) {
  const Tokenizer tok(model());
  const std::string s = "the whale rose from deep water, 1851.";
  const std::vector<int32_t> ids = tok.encode(s);
  ASSERT_FALSE(ids.empty());
  EXPECT_LT(ids.size(), s.size());  // merges happened
  for (int32_t id : ids) {
    EXPECT_GE(id, 4);
    EXPECT_LT(id, tok.vocab_size());
  }
  EXPECT_EQ(tok.decode(ids), s);
}

TEST_F(TokenizerTest, ByteFallbackRoundTripsUnseenCharacters) {
  const Tokenizer tok(model());
  const std::vector<std::string> texts = {
      "emoji \xF0\x9F\x98\x80 and \xF0\x9F\x90\x8B whale",      // 😀 🐋
      "\xE6\xBC\xA2\xE5\xAD\x97 \xE3\x81\x8B\xE3\x81\xAA",      // 漢字 かな
      "caf\xC3\xA9 na\xC3\xAFve \xE2\x80\x94 \xE2\x80\x9Cquoted\xE2\x80\x9D",  // café naïve — “quoted”
      "  leading spaces, tabs\tand\nnew lines\n\n",
      "ZQXJ {}[]<>|~^ \x01\x7F",
  };
  for (const std::string& s : texts) {
    const std::vector<int32_t> ids = tok.encode(s);
    for (int32_t id : ids) EXPECT_NE(id, tok.unk_id()) << s;
    EXPECT_EQ(tok.decode(ids), s) << s;
  }
  // An unseen character is spelled in bytes.
  const std::vector<int32_t> ids = tok.encode("\xF0\x9F\x98\x80");
  int byte_pieces = 0;
  for (int32_t id : ids) byte_pieces += tok.is_byte(id);
  EXPECT_EQ(byte_pieces, 4);
}

TEST_F(TokenizerTest, EmptyTextAndControlIds) {
  const Tokenizer tok(model());
  EXPECT_TRUE(tok.encode("").empty());
  EXPECT_EQ(tok.decode({}), "");
  std::vector<int32_t> ids = tok.encode("the sea");
  ids.insert(ids.begin(), tok.bos_id());
  ids.push_back(tok.eos_id());
  ids.push_back(tok.pad_id());
  EXPECT_EQ(tok.decode(ids), "the sea");
}

TEST_F(TokenizerTest, DecodeRejectsOutOfRangeIds) {
  const Tokenizer tok(model());
  EXPECT_THROW(tok.decode({5, 320}), Error);
  EXPECT_THROW(tok.decode({-1}), Error);
  EXPECT_THROW(tok.id_to_piece(1000), Error);
  try {
    tok.decode({5, 99999});
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("99999"), std::string::npos);
  }
}

TEST_F(TokenizerTest, TrainingIsDeterministic) {
  const std::string again = path("again/tokenizer.model");
  moepp::train_tokenizer({path("train.txt")}, again, 320);
  EXPECT_EQ(read_bytes(again), read_bytes(model()));
}

TEST_F(TokenizerTest, LongLinesAreCutNotDropped) {
  // One 20 KB line (longer than max_sentence_bytes) must still train a usable model.
  std::string line;
  for (int i = 0; line.size() < 20000; ++i) line += (i % 3 ? "harpoon " : "leviathan ");
  write_bytes(path("long.txt"), line + "\n");
  const std::string m = path("long/tokenizer.model");
  moepp::TokenizerTrainOptions o;
  o.max_sentence_bytes = 1024;
  moepp::train_tokenizer({path("long.txt")}, m, 300, o);
  const Tokenizer tok(m);
  const std::vector<int32_t> ids = tok.encode("leviathan harpoon");
  EXPECT_LE(ids.size(), 4u);  // learned whole words, not bytes
  EXPECT_EQ(tok.decode(ids), "leviathan harpoon");
}

TEST_F(TokenizerTest, LoadErrors) {
  try {
    Tokenizer t(path("missing.model"));
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("missing.model"), std::string::npos) << e.what();
  }
  write_bytes(path("corrupt.model"), "this is not a protobuf \xFF\xFE\x00\x01 at all");
  try {
    Tokenizer t(path("corrupt.model"));
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("corrupt.model"), std::string::npos) << e.what();
  }
  write_bytes(path("empty.model"), "");
  EXPECT_THROW(Tokenizer(path("empty.model")), Error);
  // A truncated real model.
  const std::string bytes = read_bytes(model());
  write_bytes(path("truncated.model"), bytes.substr(0, bytes.size() / 2));
  EXPECT_THROW(Tokenizer(path("truncated.model")), Error);
  EXPECT_THROW(Tokenizer(scratch_->dir().string()), Error);  // a directory
  Tokenizer none;
  EXPECT_FALSE(none.loaded());
  EXPECT_THROW(none.encode("x"), Error);
}

// Regression (fuzz/tokenizer_model_fuzz): a unigram model whose piece starts with a NUL byte made
// SentencePiece throw its trie builder's exception out of LoadFromSerializedProto; it must be a
// moepp::Error naming the file.
TEST_F(TokenizerTest, PieceWithNulByteIsALoadError) {
  // ModelProto {pieces: "<unk>" (UNKNOWN), "\0x"; trainer_spec {model_type: UNIGRAM}}.
  const std::string model = std::string(
      "\x0a\x0e\x0a\x05<unk>\x15\x00\x00\x00\x00\x18\x02"
      "\x0a\x09\x0a\x02\x00x\x15\x00\x00\x00\x00"
      "\x12\x02\x18\x01",
      31);
  write_bytes(path("nul_piece.model"), model);
  try {
    Tokenizer t(path("nul_piece.model"));
    FAIL() << "loaded";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("nul_piece.model: not a valid SentencePiece model"), std::string::npos)
        << e.what();
  }
}

TEST_F(TokenizerTest, TrainErrors) {
  EXPECT_THROW(moepp::train_tokenizer({path("nope.txt")}, path("x/tokenizer.model"), 320), Error);
  write_bytes(path("blank.txt"), "\n\n  \n");
  EXPECT_THROW(moepp::train_tokenizer({path("blank.txt")}, path("x/tokenizer.model"), 320), Error);
  EXPECT_THROW(moepp::train_tokenizer({path("train.txt")}, path("x/tokenizer.model"), 100), Error);  // < 300
  EXPECT_THROW(moepp::train_tokenizer({}, path("x/tokenizer.model"), 320), Error);
  // More pieces than the text supports: the trainer's complaint becomes a moepp::Error.
  EXPECT_THROW(moepp::train_tokenizer({path("train.txt")}, path("x/tokenizer.model"), 50000), Error);
  EXPECT_FALSE(fs::exists(path("x/tokenizer.model")));
}

TEST_F(TokenizerTest, MoveKeepsModel) {
  Tokenizer a(model());
  Tokenizer b = std::move(a);
  EXPECT_EQ(b.decode(b.encode("grey sea")), "grey sea");
}

}  // namespace
