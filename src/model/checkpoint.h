// Model checkpoints in the Hugging Face layout (the model's side; the file formats are io/'s): a directory with config.json and model.safetensors
// (or shards listed by model.safetensors.index.json). Saving writes F32; loading converts F32, BF16
// and F16 to fp32. Every fault (malformed config, missing / unexpected / mis-shaped tensor, corrupt or
// truncated shard) is a moepp::Error naming the file and the tensor or field.
#pragma once

#include <string>
#include <utility>

#include "model/model_config.h"
#include "model/model_params.h"

namespace moepp {

// Writes dir/model.safetensors then dir/config.json, each atomically (temporary name, then rename).
// Creates dir if needed.
void save_model(const std::string& dir, const ModelConfig& cfg, const ModelParams& params);

// Reads dir/config.json and the weights (dir/model.safetensors, else dir/model.safetensors.index.json).
// Layer 0's gate_map is optional (it is never used); when absent it stays zero.
std::pair<ModelConfig, ModelParams> load_model(const std::string& dir);

// Reads and validates dir/config.json alone.
ModelConfig load_model_config(const std::string& dir);

// The checkpoint directory a --model argument names: DIR itself, or for a training run directory the
// checkpoint its `latest` file names (DIR/<latest>).
std::string resolve_model_dir(const std::string& path);

}  // namespace moepp
