// Tokenizer (SentencePiece wrapper) and train_tokenizer(): BPE with byte fallback, trained from a
// streaming iterator over the input files' lines (long lines cut at spaces), written atomically.
#include "tokenizer/tokenizer.h"

#include <sentencepiece_processor.h>
#include <sentencepiece_trainer.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <unordered_map>

#include "core/error.h"
#include "io/file.h"

namespace fs = std::filesystem;

namespace moepp {

// ---------------------------------------------------------------------------------------------------
// Tokenizer

Tokenizer::Tokenizer() = default;
Tokenizer::Tokenizer(const std::string& model_path) { load(model_path); }
Tokenizer::~Tokenizer() = default;
Tokenizer::Tokenizer(Tokenizer&&) noexcept = default;
Tokenizer& Tokenizer::operator=(Tokenizer&&) noexcept = default;

void Tokenizer::load(const std::string& model_path) {
  std::error_code ec;
  if (!fs::exists(model_path, ec)) throw Error(model_path + ": tokenizer model not found");
  if (!fs::is_regular_file(model_path, ec)) throw Error(model_path + ": tokenizer model is not a regular file");
  const std::string bytes = io::read_file(model_path, "the tokenizer model");
  if (bytes.empty()) throw Error(model_path + ": tokenizer model is empty");

  auto sp = std::make_unique<sentencepiece::SentencePieceProcessor>();
  sentencepiece::util::Status status;
  try {
    status = sp->LoadFromSerializedProto(bytes);
  } catch (const std::exception& e) {
    // SentencePiece throws for some corrupt models instead of returning a status (a piece that starts
    // with a NUL byte: its trie builder's "zero-length key"; found by fuzz/tokenizer_model_fuzz).
    throw Error(model_path + ": not a valid SentencePiece model (" + e.what() + ")");
  }
  if (!status.ok())
    throw Error(model_path + ": not a valid SentencePiece model (" + status.ToString() + ")");
  if (sp->GetPieceSize() <= 0) throw Error(model_path + ": SentencePiece model has no pieces");
  sp_ = std::move(sp);
  path_ = model_path;
}

const sentencepiece::SentencePieceProcessor& Tokenizer::sp() const {
  if (!sp_) throw Error("tokenizer: no model loaded");
  return *sp_;
}

std::vector<int32_t> Tokenizer::encode(std::string_view text) const {
  std::vector<int> ids;
  const auto status = sp().Encode(text, &ids);
  if (!status.ok()) throw Error(path_ + ": encode failed: " + status.ToString());
  return std::vector<int32_t>(ids.begin(), ids.end());
}

std::string Tokenizer::decode(const std::vector<int32_t>& ids) const {
  const int32_t n = vocab_size();
  std::vector<int> v;
  v.reserve(ids.size());
  for (size_t i = 0; i < ids.size(); ++i) {
    if (ids[i] < 0 || ids[i] >= n)
      throw Error(path_ + ": cannot decode id " + std::to_string(ids[i]) + " at position " + std::to_string(i) +
                  ": outside the vocabulary [0, " + std::to_string(n) + ")");
    v.push_back(ids[i]);
  }
  std::string out;
  const auto status = sp().Decode(v, &out);
  if (!status.ok()) throw Error(path_ + ": decode failed: " + status.ToString());
  return out;
}

int32_t Tokenizer::vocab_size() const { return sp().GetPieceSize(); }
int32_t Tokenizer::bos_id() const { return sp().bos_id(); }
int32_t Tokenizer::eos_id() const { return sp().eos_id(); }
int32_t Tokenizer::pad_id() const { return sp().pad_id(); }
int32_t Tokenizer::unk_id() const { return sp().unk_id(); }

std::string Tokenizer::id_to_piece(int32_t id) const {
  if (id < 0 || id >= vocab_size())
    throw Error(path_ + ": id " + std::to_string(id) + " is outside the vocabulary [0, " +
                std::to_string(vocab_size()) + ")");
  return sp().IdToPiece(id);
}

bool Tokenizer::is_byte(int32_t id) const {
  if (id < 0 || id >= vocab_size()) return false;
  return sp().IsByte(id);
}

Tokenizer::PieceInfo Tokenizer::piece_info(int32_t id) const {
  const std::string piece = id_to_piece(id);  // throws on an out-of-range id
  const sentencepiece::SentencePieceProcessor& p = sp();
  const PieceKind kind = p.IsUnknown(id)   ? PieceKind::kUnknown
                         : p.IsControl(id) ? PieceKind::kControl
                         : p.IsByte(id)    ? PieceKind::kByte
                         : p.IsUnused(id)  ? PieceKind::kUnused
                                           : PieceKind::kNormal;
  return {piece, p.GetScore(id), kind};
}

// ---------------------------------------------------------------------------------------------------
// Training

namespace {

// Length of the longest prefix of s[0, limit) that ends on a UTF-8 character boundary (>= 1 for
// limit >= 1, so progress is always made even on invalid UTF-8).
size_t utf8_floor(std::string_view s, size_t limit) {
  if (limit >= s.size()) return s.size();
  size_t cut = limit;
  while (cut > 0 && (static_cast<unsigned char>(s[cut]) & 0xC0) == 0x80) --cut;
  return cut > 0 ? cut : limit;
}

// Streams the non-blank lines of the input files; a line longer than max_bytes is cut into pieces
// of at most max_bytes, at the last space of each piece (or at a character boundary when the piece
// has no space in its second half).
class LineIterator : public sentencepiece::SentenceIterator {
 public:
  LineIterator(const std::vector<std::string>& files, size_t max_bytes) : files_(files), max_(max_bytes) {
    advance();
  }
  bool done() const override { return done_; }
  void Next() override { advance(); }
  const std::string& value() const override { return value_; }
  sentencepiece::util::Status status() const override {
    if (error_.empty()) return sentencepiece::util::Status();
    return sentencepiece::util::Status(sentencepiece::util::StatusCode::kInternal, error_);
  }
  const std::string& error() const { return error_; }

 private:
  // Errors are kept, not thrown: the iterator runs inside SentencePiece's trainer, which reads
  // status() when done() turns true.
  void advance() {
    try {
      advance_or_throw();
    } catch (const Error& e) {
      error_ = e.what();
      done_ = true;
      value_.clear();
    }
  }

  void advance_or_throw() {
    while (true) {
      if (!rest_.empty()) {
        take_piece();
        return;
      }
      if (!in_.is_open()) {
        if (next_file_ >= files_.size()) {
          done_ = true;
          value_.clear();
          return;
        }
        const std::string& f = files_[next_file_++];
        in_.open(f, std::ios::binary);
        if (!in_) throw Error(f + ": cannot open the tokenizer training input: " + std::strerror(errno));
        current_ = f;
      }
      std::string line;
      if (!std::getline(in_, line)) {
        if (in_.bad()) throw Error(current_ + ": read error");
        in_.close();
        continue;
      }
      if (!line.empty() && line.back() == '\r') line.pop_back();
      if (line.find_first_not_of(" \t") == std::string::npos) continue;
      rest_ = std::move(line);
      rest_pos_ = 0;
    }
  }

  void take_piece() {
    std::string_view r(rest_);
    r.remove_prefix(rest_pos_);
    size_t n = r.size();
    if (n > max_) {
      const size_t space = r.rfind(' ', max_ - 1);
      n = (space != std::string_view::npos && space >= max_ / 2) ? space : utf8_floor(r, max_);
    }
    value_.assign(r.substr(0, n));
    rest_pos_ += n;
    if (rest_pos_ >= rest_.size()) {
      rest_.clear();
      rest_pos_ = 0;
    }
  }

  std::vector<std::string> files_;
  size_t max_;
  size_t next_file_ = 0;
  std::ifstream in_;
  std::string current_, rest_, value_;
  size_t rest_pos_ = 0;
  bool done_ = false;
  std::string error_;
};

}  // namespace

void train_tokenizer(const std::vector<std::string>& inputs, const std::string& out_model, int vocab_size,
                     const TokenizerTrainOptions& o) {
  check(!inputs.empty(), "tokenizer train: no input files");
  check(!out_model.empty(), "tokenizer train: no output path");
  // 4 specials + 256 byte pieces + at least a few characters/merges.
  check(vocab_size >= 300 && vocab_size <= (1 << 24),
        "tokenizer train: vocab_size " + std::to_string(vocab_size) + " must be in [300, 16777216]");
  check(o.character_coverage > 0.0 && o.character_coverage <= 1.0,
        "tokenizer train: character_coverage must be in (0, 1]");
  check(o.max_sentence_bytes >= 64, "tokenizer train: max_sentence_bytes must be >= 64");
  check(o.max_sentences >= 0, "tokenizer train: max_sentences must be >= 0");
  check(o.num_threads >= 1, "tokenizer train: num_threads must be >= 1");
  for (const std::string& f : inputs) {
    std::error_code ec;
    if (!fs::is_regular_file(f, ec)) throw Error(f + ": tokenizer training input not found (or not a file)");
  }

  // Look at the first piece: an empty corpus gets a clear message rather than a trainer error.
  {
    LineIterator first(inputs, static_cast<size_t>(o.max_sentence_bytes));
    if (!first.error().empty()) throw Error(first.error());
    if (first.done()) throw Error("tokenizer train: the input files hold no text");
  }

  std::unordered_map<std::string, std::string> kw = {
      {"model_type", "bpe"},
      {"vocab_size", std::to_string(vocab_size)},
      {"byte_fallback", "true"},
      {"character_coverage", std::to_string(o.character_coverage)},
      {"normalization_rule_name", "identity"},
      {"remove_extra_whitespaces", "false"},
      {"add_dummy_prefix", "true"},
      {"split_digits", o.split_digits ? "true" : "false"},
      {"allow_whitespace_only_pieces", "true"},
      {"max_sentence_length", std::to_string(o.max_sentence_bytes)},
      {"input_sentence_size", std::to_string(o.max_sentences)},
      {"shuffle_input_sentence", "true"},
      {"num_threads", std::to_string(o.num_threads)},
      {"pad_id", "0"},
      {"bos_id", "1"},
      {"eos_id", "2"},
      {"unk_id", "3"},
      {"pad_piece", "<pad>"},
      {"bos_piece", "<s>"},
      {"eos_piece", "</s>"},
      {"unk_piece", "<unk>"},
      {"hard_vocab_limit", "true"},
      {"minloglevel", o.quiet ? "2" : "0"},
  };
  sentencepiece::SetRandomGeneratorSeed(o.seed);
  LineIterator it(inputs, static_cast<size_t>(o.max_sentence_bytes));
  std::string model;
  const auto status = sentencepiece::SentencePieceTrainer::Train(kw, &it, &model);
  if (!it.error().empty()) throw Error(it.error());
  if (!status.ok()) throw Error("tokenizer train (" + out_model + "): " + status.ToString());
  if (model.empty()) throw Error("tokenizer train (" + out_model + "): the trainer produced no model");
  const fs::path parent = fs::path(out_model).parent_path();
  if (!parent.empty()) {
    std::error_code ec;
    fs::create_directories(parent, ec);
    if (ec) throw Error("cannot create directory " + parent.string() + ": " + ec.message());
  }
  io::write_file_atomic(out_model, model);
}

}  // namespace moepp
