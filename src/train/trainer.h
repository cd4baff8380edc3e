// Trainer: one training run of an MoE++ (or vanilla MoE) language model on CPU. Prepares the run
// directory (tokenizer, token shards), then loops: micro-batches -> forward/backward -> clip ->
// AdamW with warmup + cosine/linear decay; logs a JSONL line per step and a progress bar; evaluates
// on the validation shard; writes checkpoints atomically and resumes from them bit-exactly.
//
// Run directory layout:
//   tokenizer.model, data/{train,valid}.bin, data/meta.json   (prepared once)
//   train_config.json                                          (the config the run started with)
//   log.jsonl                                                  (one JSON object per step / eval)
//   checkpoint-<step>/  config.json model.safetensors tokenizer.model optimizer.safetensors trainer_state.json
//   latest                                                     (name of the newest complete checkpoint)
#pragma once

#include <string>

#include "train/train_config.h"

namespace moepp {

struct TrainOptions {
  std::string out_dir;
  bool resume = false;      // continue from out_dir/latest
  int64_t stop_after = -1;  // > 0: stop (after checkpointing) once this step is reached (tests)
  bool quiet = false;       // no progress bar
};

// Returns the final validation loss (nats/token).
float train(const TrainConfig& cfg, const TrainOptions& opt);

}  // namespace moepp
