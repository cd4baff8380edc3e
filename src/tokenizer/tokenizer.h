// Tokenizer: a SentencePiece model (Debian libsentencepiece) behind a small moepp API, and
// train_tokenizer(), which trains a BPE model with byte fallback from plain-text files
// (docs/data.md, "Tokenizer"). Special ids follow the released MoE++ checkpoint: pad 0, bos 1, eos 2;
// unk is 3. Every failure (missing or corrupt model, unreadable input, bad id) is a moepp::Error
// naming the file or argument at fault.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace sentencepiece {
class SentencePieceProcessor;
}

namespace moepp {

class Tokenizer {
 public:
  Tokenizer();
  explicit Tokenizer(const std::string& model_path);  // = Tokenizer(); load(model_path)
  ~Tokenizer();
  Tokenizer(Tokenizer&&) noexcept;
  Tokenizer& operator=(Tokenizer&&) noexcept;
  Tokenizer(const Tokenizer&) = delete;
  Tokenizer& operator=(const Tokenizer&) = delete;

  // Loads a SentencePiece .model file (replacing any loaded model). Throws moepp::Error when the
  // file is missing, unreadable, or not a valid SentencePiece model.
  void load(const std::string& model_path);
  bool loaded() const { return sp_ != nullptr; }
  const std::string& path() const { return path_; }

  // Text -> ids, without bos/eos (callers add them). Thread-safe (const).
  std::vector<int32_t> encode(std::string_view text) const;
  // Ids -> text. Control ids (pad/bos/eos) decode to nothing; byte-fallback pieces are reassembled
  // into UTF-8. Throws moepp::Error on an id outside [0, vocab_size).
  std::string decode(const std::vector<int32_t>& ids) const;

  int32_t vocab_size() const;
  int32_t bos_id() const;  // -1 when the model has none
  int32_t eos_id() const;
  int32_t pad_id() const;
  int32_t unk_id() const;
  std::string id_to_piece(int32_t id) const;  // throws on out-of-range id
  bool is_byte(int32_t id) const;             // a <0xNN> byte-fallback piece

  // What the model file says of one id (for exporting the vocabulary, e.g. to GGUF): its piece, its
  // score, and its kind. Throws on an out-of-range id.
  enum class PieceKind { kNormal, kUnknown, kControl, kByte, kUnused };
  struct PieceInfo {
    std::string piece;
    float score;
    PieceKind kind;
  };
  PieceInfo piece_info(int32_t id) const;

 private:
  const sentencepiece::SentencePieceProcessor& sp() const;  // throws when nothing is loaded
  std::unique_ptr<sentencepiece::SentencePieceProcessor> sp_;
  std::string path_;
};

// Settings of train_tokenizer(). The defaults are the ones docs/data.md describes; every setting
// that affects the result is fixed here, so the same inputs and options give a byte-identical model.
struct TokenizerTrainOptions {
  double character_coverage = 0.9995;  // characters outside the coverage fall back to bytes
  int max_sentence_bytes = 4096;       // input lines longer than this are cut at spaces into pieces
  int64_t max_sentences = 0;           // > 0: train on a deterministic sample of this many pieces
  bool split_digits = true;            // every digit is its own piece (as in LLaMA)
  int num_threads = 1;                 // trainer threads
  uint32_t seed = 1234;                // random seed of the trainer (used when sampling)
  bool quiet = true;                   // silence SentencePiece's progress log
};

// Trains a BPE SentencePiece model on the lines of `inputs` (UTF-8 text files; blank lines are
// skipped) and writes it to `out_model` atomically (the directory is created if needed). Model:
// BPE, byte_fallback, identity normalisation (decode(encode(s)) == s), whitespace kept as is, dummy
// prefix on, pad 0 / bos 1 / eos 2 / unk 3. Throws moepp::Error on unreadable inputs, an empty
// corpus, a vocab_size too small for the 256 byte pieces plus specials, or a trainer failure.
void train_tokenizer(const std::vector<std::string>& inputs, const std::string& out_model, int vocab_size,
                     const TokenizerTrainOptions& options = {});

}  // namespace moepp
