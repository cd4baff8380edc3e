// Parsing and validation of TrainConfig (see train_config.h).
#include "train/train_config.h"

#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <type_traits>

#include "core/error.h"
#include "io/json_fields.h"
#include "io/json_file.h"

namespace moepp {
namespace {

// Reads `key` into `out` when it is set (absent or null keeps the default in `out`), by out's type.
template <class T>
void read(const nlohmann::json& j, const char* key, T& out, const std::string& source) {
  if constexpr (std::is_same_v<T, bool>) {
    out = io::get_bool(j, key, source, out);
  } else if constexpr (std::is_integral_v<T>) {
    out = io::get_int<T>(j, key, source, out);
  } else if constexpr (std::is_floating_point_v<T>) {
    out = static_cast<T>(io::get_number(j, key, source, out));
  } else {
    out = io::get_string(j, key, source, out);
  }
}

}  // namespace

TrainConfig TrainConfig::from_json(const nlohmann::json& j, const std::string& source) {
  static const std::set<std::string> known = {
      "model", "train_text", "valid_text", "tokenizer_vocab", "batch_size", "seq_len", "grad_accum", "steps",
      "lr", "min_lr", "init_lr", "warmup_steps", "schedule", "weight_decay", "grad_clip", "beta1", "beta2",
      "init_std", "seed", "eval_every", "eval_batches", "ckpt_every", "sample_prompt", "sample_tokens", "comment"};
  if (!j.is_object()) throw Error(source + ": a training config must be a JSON object");
  for (auto it = j.begin(); it != j.end(); ++it)
    if (!known.count(it.key())) throw Error(source + ": unknown field '" + it.key() + "'");
  TrainConfig c;
  if (!j.contains("model") || !j["model"].is_object()) throw Error(source + ": field 'model' (an object) is required");
  c.model = j["model"];
  read(j, "train_text", c.train_text, source);
  read(j, "valid_text", c.valid_text, source);
  if (c.train_text.empty()) throw Error(source + ": field 'train_text' is required");
  read(j, "tokenizer_vocab", c.tokenizer_vocab, source);
  read(j, "batch_size", c.batch_size, source);
  read(j, "seq_len", c.seq_len, source);
  read(j, "grad_accum", c.grad_accum, source);
  read(j, "steps", c.steps, source);
  read(j, "lr", c.lr, source);
  read(j, "min_lr", c.min_lr, source);
  read(j, "init_lr", c.init_lr, source);
  read(j, "warmup_steps", c.warmup_steps, source);
  std::string schedule = "cosine";
  read(j, "schedule", schedule, source);
  if (schedule != "cosine" && schedule != "linear") throw Error(source + ": field 'schedule' must be cosine or linear");
  c.cosine = schedule == "cosine";
  read(j, "weight_decay", c.weight_decay, source);
  read(j, "grad_clip", c.grad_clip, source);
  read(j, "beta1", c.beta1, source);
  read(j, "beta2", c.beta2, source);
  read(j, "init_std", c.init_std, source);
  read(j, "seed", c.seed, source);
  read(j, "eval_every", c.eval_every, source);
  read(j, "eval_batches", c.eval_batches, source);
  read(j, "ckpt_every", c.ckpt_every, source);
  read(j, "sample_prompt", c.sample_prompt, source);
  read(j, "sample_tokens", c.sample_tokens, source);
  auto require = [&](bool ok, const char* key, const char* rule) {
    check(ok, source + ": field '" + key + "' must be " + rule);
  };
  require(c.batch_size > 0, "batch_size", "> 0");
  require(c.seq_len > 0, "seq_len", "> 0");
  require(c.grad_accum > 0, "grad_accum", "> 0");
  require(c.steps > 0, "steps", "> 0");
  require(c.eval_every > 0, "eval_every", "> 0");
  require(c.eval_batches > 0, "eval_batches", "> 0");
  require(c.ckpt_every > 0, "ckpt_every", "> 0");
  require(c.tokenizer_vocab >= 300, "tokenizer_vocab", ">= 300");
  require(c.warmup_steps >= 0, "warmup_steps", ">= 0");
  require(c.lr > 0, "lr", "> 0");
  require(c.min_lr >= 0, "min_lr", ">= 0");
  require(c.init_lr >= 0, "init_lr", ">= 0");
  require(c.weight_decay >= 0, "weight_decay", ">= 0");
  require(c.grad_clip >= 0, "grad_clip", ">= 0");
  require(c.beta1 >= 0 && c.beta1 < 1, "beta1", "in [0, 1)");
  require(c.beta2 >= 0 && c.beta2 < 1, "beta2", "in [0, 1)");
  require(c.sample_tokens >= 0, "sample_tokens", ">= 0");
  return c;
}

TrainConfig TrainConfig::from_file(const std::string& path) {
  const nlohmann::json j = io::read_json_file(path, "the training config");
  TrainConfig c = from_json(j, path);
  const std::filesystem::path base = std::filesystem::path(path).parent_path();
  auto resolve = [&](std::string& p) {
    if (!p.empty() && std::filesystem::path(p).is_relative() && !std::filesystem::exists(p)) p = (base / p).string();
  };
  resolve(c.train_text);
  resolve(c.valid_text);
  return c;
}

nlohmann::json TrainConfig::to_json() const {
  return {{"model", model},         {"train_text", train_text},   {"valid_text", valid_text},
          {"tokenizer_vocab", tokenizer_vocab}, {"batch_size", batch_size}, {"seq_len", seq_len},
          {"grad_accum", grad_accum}, {"steps", steps},             {"lr", lr},
          {"min_lr", min_lr},       {"init_lr", init_lr},         {"warmup_steps", warmup_steps},
          {"schedule", cosine ? "cosine" : "linear"}, {"weight_decay", weight_decay}, {"grad_clip", grad_clip},
          {"beta1", beta1},         {"beta2", beta2},             {"init_std", init_std},
          {"seed", seed},           {"eval_every", eval_every},   {"eval_batches", eval_batches},
          {"ckpt_every", ckpt_every}, {"sample_prompt", sample_prompt}, {"sample_tokens", sample_tokens}};
}

}  // namespace moepp
