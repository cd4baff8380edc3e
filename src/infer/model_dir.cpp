// Opening a model directory for inference (see model_dir.h).
#include "infer/model_dir.h"

#include <filesystem>
#include <memory>

#include "core/error.h"
#include "infer/infer_weights.h"
#include "model/checkpoint.h"
#include "io/weight_source.h"

namespace moepp {

ModelDir open_model_dir(const std::string& path, const std::string& tokenizer, const std::string& who) {
  namespace fs = std::filesystem;
  check(fs::is_directory(path), who + ": --model " + path + ": no such directory");
  ModelDir m;
  m.dir = resolve_model_dir(path);
  check(fs::is_directory(m.dir), who + ": " + path + ": its latest checkpoint " + m.dir + " does not exist");
  m.cfg = load_model_config(m.dir);
  const std::string tok_path = tokenizer.empty() ? (fs::path(m.dir) / "tokenizer.model").string() : tokenizer;
  check(fs::exists(tok_path), who + ": " + tok_path + " not found" + (tokenizer.empty() ? " (pass --tokenizer)" : ""));
  m.tok.load(tok_path);
  check(m.tok.vocab_size() <= m.cfg.vocab, who + ": " + tok_path + " has " + std::to_string(m.tok.vocab_size()) +
                                               " pieces, more than the model's vocab_size " +
                                               std::to_string(m.cfg.vocab));
  check(m.cfg.bos >= 0 && m.cfg.bos < m.cfg.vocab, who + ": " + m.dir + "/config.json: bos_token_id " +
                                                       std::to_string(m.cfg.bos) + " is outside the vocabulary");
  return m;
}

Decoder load_decoder(const ModelDir& m, WeightDType dtype) {
  std::shared_ptr<const io::WeightSource> src = io::open_weights(m.dir);
  return Decoder(m.cfg, InferWeights::load(m.cfg, std::move(src), dtype));
}

}  // namespace moepp
