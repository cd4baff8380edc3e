// Sampler: picks the next token from a row of logits with the usual decoding controls, in the order
// llama.cpp and Hugging Face apply them: repetition penalty (on tokens already in the sequence:
// logit / p if > 0 else logit * p), then greedy (temperature 0) or temperature, top-k, top-p (nucleus),
// min-p (keep p >= min_p * p_max), and a draw from a seeded mt19937_64. Deterministic for a seed.
#pragma once

#include <cstdint>
#include <random>
#include <string>
#include <vector>

namespace moepp {

struct SamplingParams {
  float temperature = 1.0f;         // 0 = greedy (argmax)
  int64_t top_k = 0;                // 0 = off
  float top_p = 1.0f;               // 1 = off; in (0, 1]
  float min_p = 0.0f;               // 0 = off; in [0, 1]
  float repetition_penalty = 1.0f;  // 1 = off; > 0
  uint64_t seed = 0;
  // Throws moepp::Error naming the field when a value is out of range.
  void validate() const;
};

class Sampler {
 public:
  explicit Sampler(SamplingParams p);
  const SamplingParams& params() const { return p_; }
  // logits [V] (modified in place by the penalty); history: the sequence so far (prompt included).
  int32_t sample(float* logits, int64_t V, const std::vector<int32_t>& history);

 private:
  SamplingParams p_;
  std::mt19937_64 rng_;
  std::vector<std::pair<float, int32_t>> cand_;
};

}  // namespace moepp
