// `moepp tokenizer train|encode|decode`: train a BPE SentencePiece model with byte fallback on text
// files (docs/data.md, "Tokenizer"), and encode / decode with an existing tokenizer.model.
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "cli/commands.h"
#include "core/error.h"
#include "tokenizer/tokenizer.h"

namespace moepp::cli {
namespace {

struct TrainArgs {
  std::vector<std::string> inputs;
  std::string out;
  int vocab_size = 8192;
  TokenizerTrainOptions opts;
  bool verbose = false;
};

struct EncodeArgs {
  std::string model, text;
  bool pieces = false, bos = false, eos = false;
};

struct DecodeArgs {
  std::string model, ids;
};

void run_train(TrainArgs& a) {
  a.opts.quiet = !a.verbose;
  const auto t0 = std::chrono::steady_clock::now();
  train_tokenizer(a.inputs, a.out, a.vocab_size, a.opts);
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const Tokenizer tok(a.out);
  std::printf("tokenizer: wrote %s (BPE, byte fallback, %d pieces; pad %d bos %d eos %d unk %d) in %.1f s\n",
              a.out.c_str(), tok.vocab_size(), tok.pad_id(), tok.bos_id(), tok.eos_id(), tok.unk_id(), s);
}

void run_encode(const EncodeArgs& a) {
  const Tokenizer tok(a.model);
  std::vector<int32_t> ids = tok.encode(a.text);
  if (a.bos) ids.insert(ids.begin(), tok.bos_id());
  if (a.eos) ids.push_back(tok.eos_id());
  std::string line;
  for (size_t i = 0; i < ids.size(); ++i) {
    if (i) line += ' ';
    line += a.pieces ? tok.id_to_piece(ids[i]) : std::to_string(ids[i]);
  }
  std::printf("%s\n", line.c_str());
}

void run_decode(const DecodeArgs& a) {
  const Tokenizer tok(a.model);
  std::vector<int32_t> ids;
  std::string s = a.ids;
  for (char& c : s)
    if (c == ',') c = ' ';
  std::istringstream in(s);
  std::string word;
  while (in >> word) {
    size_t used = 0;
    long long v = 0;
    try {
      v = std::stoll(word, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    if (used != word.size() || v < INT32_MIN || v > INT32_MAX) throw Error("--ids: '" + word + "' is not an integer id");
    ids.push_back(static_cast<int32_t>(v));
  }
  std::printf("%s\n", tok.decode(ids).c_str());
}

}  // namespace

void register_tokenizer_command(CLI::App& app) {
  CLI::App* tok = app.add_subcommand("tokenizer", "Train a SentencePiece BPE tokenizer, or encode/decode with one");
  tok->require_subcommand(1);

  auto ta = std::make_shared<TrainArgs>();
  CLI::App* train = tok->add_subcommand("train", "Train a BPE tokenizer (byte fallback; pad 0, bos 1, eos 2, unk 3)");
  train->add_option("--input", ta->inputs, "text file(s), comma separated or repeated")
      ->required()
      ->delimiter(',');
  train->add_option("--vocab-size", ta->vocab_size, "number of pieces (>= 300)")->capture_default_str();
  train->add_option("--out", ta->out, "output model, e.g. DIR/tokenizer.model")->required();
  train->add_option("--character-coverage", ta->opts.character_coverage,
                    "share of characters kept as pieces; the rest fall back to bytes")
      ->capture_default_str();
  train->add_option("--max-sentence-bytes", ta->opts.max_sentence_bytes,
                    "lines longer than this are cut at spaces")
      ->capture_default_str();
  train->add_option("--max-sentences", ta->opts.max_sentences,
                    "train on a deterministic sample of this many lines (0: all)")
      ->capture_default_str();
  train->add_option("--threads", ta->opts.num_threads, "trainer threads")->capture_default_str();
  train->add_option("--seed", ta->opts.seed, "trainer random seed")->capture_default_str();
  train->add_flag("--verbose", ta->verbose, "show SentencePiece's training log");
  train->callback([ta] { run_train(*ta); });

  auto ea = std::make_shared<EncodeArgs>();
  CLI::App* enc = tok->add_subcommand("encode", "Print the ids (or pieces) of a text");
  enc->add_option("--model", ea->model, "tokenizer.model")->required();
  enc->add_option("--text", ea->text, "text to encode")->required();
  enc->add_flag("--pieces", ea->pieces, "print pieces instead of ids");
  enc->add_flag("--bos", ea->bos, "prepend bos");
  enc->add_flag("--eos", ea->eos, "append eos");
  enc->callback([ea] { run_encode(*ea); });

  auto da = std::make_shared<DecodeArgs>();
  CLI::App* dec = tok->add_subcommand("decode", "Print the text of a list of ids");
  dec->add_option("--model", da->model, "tokenizer.model")->required();
  dec->add_option("--ids", da->ids, "ids separated by spaces or commas")->required();
  dec->callback([da] { run_decode(*da); });
}

}  // namespace moepp::cli
