// Sampler: picks the next token from a row of logits with the usual decoding controls, in the order
// llama.cpp and Hugging Face apply them: repetition penalty (on tokens already in the sequence:
// logit / p if > 0 else logit * p), then OpenAI's presence and frequency penalties (on the generated
// tokens only: logit[t] -= c[t] * frequency_penalty + (c[t] > 0) * presence_penalty, c[t] = how often
// t was generated), then greedy (temperature 0) or temperature, top-k, top-p (nucleus), min-p (keep
// p >= min_p * p_max), and a draw from a seeded mt19937_64. Deterministic for a seed.
// token_logprobs(): the log-softmax of a row of logits at a token, and the row's most likely tokens.
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
  float presence_penalty = 0.0f;    // 0 = off; in [-2, 2]
  float frequency_penalty = 0.0f;   // 0 = off; in [-2, 2]
  uint64_t seed = 0;
  // Throws moepp::Error naming the field when a value is out of range.
  void validate() const;
};

class Sampler {
 public:
  explicit Sampler(SamplingParams p);
  const SamplingParams& params() const { return p_; }
  // logits [V] (modified in place by the penalties); history: the sequence so far (prompt included),
  // of which the first n_prompt are the prompt (the presence and frequency penalties count only the
  // tokens after them).
  int32_t sample(float* logits, int64_t V, const std::vector<int32_t>& history, size_t n_prompt = 0);

 private:
  SamplingParams p_;
  std::mt19937_64 rng_;
  std::vector<std::pair<float, int32_t>> cand_;
  std::vector<int32_t> count_;  // occurrences per token among the generated ones (penalties)
};

struct TokenLogprob {
  int32_t token = 0;
  float logprob = 0.0f;
};
// A sampled token's log-probability and the row's `top` most likely tokens (descending; ties by id).
struct TokenLogprobs {
  TokenLogprob chosen;
  std::vector<TokenLogprob> top;
};
// log_softmax(logits)[token] and the k most likely tokens (k clamped to V), computed in double.
TokenLogprobs token_logprobs(const float* logits, int64_t V, int32_t token, int64_t k);

}  // namespace moepp
