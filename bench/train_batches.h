// The training benchmarks' shared setup (`moepp bench train` on the CPU and on the GPU, and the GPU
// machine's moepp_gpu_train): the model a training config describes as the benchmark builds it, and the
// random batches it trains on. Header-only (the GPU-only build compiles its driver without the CLI).
#pragma once

#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "model/model_config.h"
#include "train/train_config.h"

namespace moepp {

// The "model" block of tc as the trainer builds it: the vocabulary is the tokenizer's size
// (tokenizer_vocab) unless given, max_position_embeddings is T unless given. Throws when T exceeds it.
inline ModelConfig train_bench_model(const TrainConfig& tc, int64_t T, const std::string& source) {
  nlohmann::json mj = tc.model;
  if (!mj.contains("vocab_size")) mj["vocab_size"] = tc.tokenizer_vocab;
  if (!mj.contains("max_position_embeddings")) mj["max_position_embeddings"] = T;
  const ModelConfig mc = ModelConfig::from_json(mj, source + ": field 'model'");
  check(T <= mc.max_pos, source + ": the sequence length exceeds the model's max_position_embeddings");
  return mc;
}

// `steps` random batches of B windows of T + 1 uniform tokens in [0, V): inputs and their next-token
// targets, [B*T] each (deterministic: mt19937 seeded with 12345).
inline void random_train_batches(std::vector<std::vector<int32_t>>& inputs, std::vector<std::vector<int32_t>>& targets,
                                 int steps, int64_t B, int64_t T, int64_t V) {
  std::mt19937 rng(12345);
  std::uniform_int_distribution<int32_t> tok(0, static_cast<int32_t>(V - 1));
  inputs.assign(steps, {});
  targets.assign(steps, {});
  for (int s = 0; s < steps; ++s) {
    inputs[s].resize(B * T);
    targets[s].resize(B * T);
    for (int64_t b = 0; b < B; ++b) {
      std::vector<int32_t> w(T + 1);
      for (int32_t& x : w) x = tok(rng);
      for (int64_t t = 0; t < T; ++t) {
        inputs[s][b * T + t] = w[t];
        targets[s][b * T + t] = w[t + 1];
      }
    }
  }
}

}  // namespace moepp
