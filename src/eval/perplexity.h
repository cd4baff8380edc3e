// Perplexity of a token stream with a sliding window (`moepp eval ppl`, docs/eval.md): Hugging Face's
// strided method. Windows of `window` tokens start every `stride` tokens; each window scores only the
// targets no earlier window scored, with the window's preceding tokens as context, and the loop stops
// at the window that reaches the end. Every window runs from an empty KV cache slot through the
// inference decoder; several windows share one forward pass (one cache slot each).
#pragma once

#include <cstdint>
#include <functional>
#include <vector>

#include "infer/decoder.h"

namespace moepp::eval {

// One window: the model runs tokens [begin, end) and scores the targets at positions
// [score_from, end), each predicted from the logits of the position before it (begin < score_from).
struct Window {
  int64_t begin = 0, end = 0, score_from = 0;
  int64_t scored() const { return end - score_from; }
};

// The windows over n_tokens tokens (HF: begin = 0, stride, 2·stride, ...; end = min(begin + window,
// n_tokens); score_from = max(previous end, begin + 1); stop after the window with end == n_tokens).
// Every position in [1, n_tokens) is scored exactly once when stride < window; with stride == window
// the first token of each window (no context) is not scored. Windows that would score nothing are
// skipped. Throws moepp::Error unless n_tokens >= 2, window >= 2 and 1 <= stride <= window.
std::vector<Window> sliding_windows(int64_t n_tokens, int64_t window, int64_t stride);

struct PerplexityOptions {
  int64_t window = 0;                // tokens per window (<= the model's max_position_embeddings)
  int64_t stride = 0;                // tokens between window starts (1..window)
  int64_t max_rows_per_pass = 4096;  // windows are batched into passes of at most this many tokens
                                     // (one window per pass at least, 16 at most)
};

struct PerplexityResult {
  int64_t tokens = 0;    // tokens in the stream (bos included)
  int64_t scored = 0;    // targets scored
  int64_t windows = 0;   // windows run
  double nll_sum = 0.0;  // sum over scored targets of -log p(target | context), nats
  double ffn_experts_per_token = 0.0;  // FFN slots kept / (rows x MoE layers) over every row run
  double mean_nll() const { return scored ? nll_sum / static_cast<double>(scored) : 0.0; }
  double perplexity() const;
};

// Called after each forward pass: (targets scored so far, targets in all, nll so far).
using PerplexityProgress = std::function<void(int64_t done, int64_t total, double nll_sum)>;

// Scores tokens [N] (ids in the model's vocabulary; tokens[0] normally bos) with the sliding window.
// Throws moepp::Error on a bad window / stride (see sliding_windows, and window > max_position_embeddings)
// or a token outside the vocabulary.
PerplexityResult score_perplexity(const Decoder& dec, const std::vector<int32_t>& tokens, const PerplexityOptions& opt,
                                  const PerplexityProgress& progress = {});

// total NLL (nats) / ln 2 / bytes: bits per UTF-8 byte of the text the scored tokens cover.
double bits_per_byte(double nll_sum, int64_t bytes);

}  // namespace moepp::eval
