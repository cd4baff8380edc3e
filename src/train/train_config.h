// TrainConfig: one training run, read from a JSON file (configs/*.json; keys in docs/training.md):
// the model's Hugging Face style config, the data, the optimiser and schedule, logging and
// checkpointing. Unknown keys are errors; every field is validated with a message naming it.
#pragma once

#include <cstdint>
#include <string>

#include <nlohmann/json.hpp>

namespace moepp {

struct TrainConfig {
  nlohmann::json model;         // Hugging Face style config.json contents (vocab_size is set from the tokenizer)
  std::string train_text, valid_text;  // documents separated by blank lines (paths relative to the config file)
  int tokenizer_vocab = 4096;   // trained on train_text when the run has no tokenizer yet
  int64_t batch_size = 8, seq_len = 128, grad_accum = 1, steps = 200;
  float lr = 3e-3f, min_lr = 3e-4f, init_lr = 1e-7f;
  int64_t warmup_steps = 20;
  bool cosine = true;
  float weight_decay = 0.1f, grad_clip = 1.0f, beta1 = 0.9f, beta2 = 0.95f, init_std = 0.02f;
  uint64_t seed = 1;
  int64_t eval_every = 50, eval_batches = 8, ckpt_every = 50;
  std::string sample_prompt = "The";  // printed sample at the end ("" = none)
  int64_t sample_tokens = 60;

  // Throws moepp::Error, prefixed "<source>: ", naming the field at fault (unknown, missing, of the
  // wrong type or out of range).
  static TrainConfig from_json(const nlohmann::json& j, const std::string& source);
  // from_json of the file; a relative train_text / valid_text that does not exist from the working
  // directory is taken relative to the config file's directory.
  static TrainConfig from_file(const std::string& path);
  nlohmann::json to_json() const;
};

}  // namespace moepp
