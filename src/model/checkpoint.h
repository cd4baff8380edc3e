// Model checkpoints in the Hugging Face layout (the model's side; the file formats are io/'s): a directory with config.json and model.safetensors
// (or shards listed by model.safetensors.index.json). Saving writes F32; loading converts F32, BF16
// and F16 to fp32. Every fault (malformed config, missing / unexpected / mis-shaped tensor, corrupt or
// truncated shard) is a moepp::Error naming the file and the tensor or field.
#pragma once

#include <string>
#include <utility>

#include "model/model_config.h"
#include "model/model_params.h"
#include "moe/expert_shard.h"

namespace moepp {

// Writes dir/model.safetensors then dir/config.json, each atomically (temporary name, then rename).
// Creates dir if needed.
void save_model(const std::string& dir, const ModelConfig& cfg, const ModelParams& params);

// Expert-parallel parts of a model (moe/expert_shard.h): shard `index` of `count` has the FFN experts
// ExpertShard gives it (count must divide each layer's FFN expert count). Dense tensors (everything but
// FFN experts) belong to shard 0's file and are held by every shard in memory. count 1: the whole model.

// Whether the tensor is an FFN expert's (up_proj or down_proj): the tensors expert parallelism splits.
bool is_ffn_expert(const ParamSpec& spec);

// The shard whose file stores the tensor: its FFN expert's owner, else 0.
int shard_of(const ModelConfig& cfg, const ParamSpec& spec, int count);

// Whether a process with this shard holds the tensor in memory (a dense one, or one of its experts).
bool shard_holds(const ModelConfig& cfg, const ParamSpec& spec, ExpertShard shard);

// Frees the FFN experts shard does not hold (their tensors become empty).
void keep_shard(ModelParams& params, const ModelConfig& cfg, ExpertShard shard);

// Writes this shard's weights file, atomically: count 1 writes dir/model.safetensors, else
// dir/model-<index+1>-of-<count>.safetensors with the tensors shard_of gives it. params must hold them.
// Creates dir if needed. Every shard's file plus save_model_index make a checkpoint that load_model
// reads whole or by shard (in any other count).
void save_model_shard(const std::string& dir, const ModelConfig& cfg, const ModelParams& params, ExpertShard shard);

// Writes dir/config.json and, for count > 1, dir/model.safetensors.index.json naming every tensor's
// shard file (what save_model_shard writes). Once per checkpoint.
void save_model_index(const std::string& dir, const ModelConfig& cfg, int count);

// load_model for one shard: reads the dense tensors and the shard's FFN experts only, whatever shards
// the checkpoint was written in; the other experts stay empty.
std::pair<ModelConfig, ModelParams> load_model(const std::string& dir, ExpertShard shard);

// Reads dir/config.json and the weights (dir/model.safetensors, else dir/model.safetensors.index.json).
// Layer 0's gate_map is optional (it is never used); when absent it stays zero.
std::pair<ModelConfig, ModelParams> load_model(const std::string& dir);

// Reads and validates dir/config.json alone.
ModelConfig load_model_config(const std::string& dir);

// The checkpoint directory a --model argument names: DIR itself, or for a training run directory the
// checkpoint its `latest` file names (DIR/<latest>).
std::string resolve_model_dir(const std::string& path);

}  // namespace moepp
