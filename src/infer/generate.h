// Text generation by repeated full forward passes (no KV cache yet): greedy or temperature sampling
// with top-k, deterministic for a seed. Used by `moepp generate` and the end of `moepp train`.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "model/model.h"
#include "model/model_params.h"

namespace moepp {

struct SampleOptions {
  int64_t max_new_tokens = 60;
  float temperature = 0.8f;  // 0 = greedy
  int64_t top_k = 40;        // 0 = all
  uint64_t seed = 1;
  bool stop_at_eos = true;
};

// Returns prompt_ids followed by the generated ids. The context is cut to the model's max_pos.
std::vector<int32_t> generate(const Model& model, const ModelParams& params, std::vector<int32_t> prompt_ids,
                              const SampleOptions& opt);

}  // namespace moepp
