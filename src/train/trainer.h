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
//                       (with expert parallelism E > 1: model-0000i-of-0000E.safetensors and
//                       optimizer-0000i-of-0000E.safetensors, each with its .safetensors.index.json)
//   latest                                                     (name of the newest complete checkpoint)
//
// Under mpirun (options.world with N > 1 ranks) the run is spread as train/train_parallel.h says; rank
// 0 prepares the run directory, writes the log and prints progress; the ranks of the first
// data-parallel replica write the checkpoint's shards. The run directory must be one directory that
// every rank sees (a local or shared file system).
#pragma once

#include <string>

#include "comm/comm.h"
#include "train/step_backend.h"
#include "train/train_config.h"

namespace moepp {

struct TrainOptions {
  std::string out_dir;
  bool resume = false;      // continue from out_dir/latest
  int64_t stop_after = -1;  // > 0: stop (after checkpointing) once this step is reached (tests)
  bool quiet = false;       // no progress bar
  Comm* world = nullptr;    // the job's processes (null: this one alone); every rank calls train()
  int ep_size = 1;          // ranks per expert-parallel group (divides the ranks and the FFN experts)
  // Where the steps run (train/step_backend.h; e.g. the GPU): null = the CPU engine. With a backend: one
  // process, ep_size 1, grad_accum 1, no relu router. Not owned; must outlive train().
  StepBackend* backend = nullptr;
};

struct TrainResult {
  float val_loss = 0.0f;           // final validation loss, nats/token
  double val_bits_per_byte = 0.0;  // the same per byte of validation text
  bool completed = false;          // the run reached cfg.steps (not stopped early by stop_after)
};

// Runs (or resumes) the run; the last checkpoint is out_dir/<latest>. Throws moepp::Error on bad
// input (naming the file and field) or a failed write.
TrainResult train(const TrainConfig& cfg, const TrainOptions& opt);

}  // namespace moepp
