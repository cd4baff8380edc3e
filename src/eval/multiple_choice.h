// Log-likelihood multiple choice (`moepp eval mc`, docs/eval.md), scored as lm-evaluation-harness
// scores its multiple_choice tasks: each choice's log-likelihood is the sum of log p(continuation
// tokens | context), acc takes the argmax of the sums and acc_norm the argmax of sum / UTF-8 bytes of
// the choice. Task files are JSONL, one {"context": str, "choices": [str, ...], "gold": int} per line.
//
// Tokenisation (the harness's _encode_pair): whitespace at the end of the context moves to the front of
// the continuation; then whole = encode(context + continuation), ctx = encode(context), and the
// continuation tokens are whole[len(ctx):]. The model reads [bos] + ctx + continuation[:-1]. When that
// exceeds max_position_embeddings the oldest context tokens are dropped (per choice, as the harness).
//
// Scoring runs through the inference decoder: a question's context is prefilled once into one KV cache
// slot and copied into one slot per further choice, then every choice's continuation of a group of
// questions goes through a single forward pass.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "infer/decoder.h"

namespace moepp::eval {

struct McItem {
  std::string context;
  std::vector<std::string> choices;  // >= 2, each non-empty
  int64_t gold = 0;                  // index into choices
  int64_t line = 0;                  // 1-based line of the task file
};

// Reads a JSONL task file: blank lines are skipped, other keys of an object are ignored. limit > 0:
// returns the first `limit` items only (every line is still validated). Throws moepp::Error "FILE:LINE: ..." naming the field at fault (not
// JSON, not an object, missing / mistyped context, choices or gold, fewer than 2 choices, an empty
// choice, gold out of range), or naming the file when it cannot be read or holds no item.
std::vector<McItem> read_mc_tasks(const std::string& path, int64_t limit = 0);

// Text -> token ids without bos (a Tokenizer's encode).
using Encoder = std::function<std::vector<int32_t>(std::string_view)>;

// One (context, continuation) pair tokenised the harness way (see above); context has no bos.
struct EncodedPair {
  std::vector<int32_t> context, continuation;
};
EncodedPair encode_pair(const Encoder& encode, std::string_view context, std::string_view continuation);

// A question ready to score: the model input of choice c is context_c + continuation[c][:-1], where
// context_c is [bos] + context, minus its first drop[c] tokens when the whole would not fit.
struct McEncoded {
  std::vector<int32_t> context;                    // bos + context tokens
  std::vector<std::vector<int32_t>> continuation;  // [n_choices] tokens, each non-empty
  std::vector<int64_t> drop;                       // [n_choices] context tokens dropped on the left
};

// Tokenises an item for a model with max_len positions. Throws moepp::Error naming where (the
// item's line) when a choice gives no continuation token or more than max_len.
McEncoded encode_item(const Encoder& encode, const McItem& item, int32_t bos, int64_t max_len,
                      const std::string& where);

struct McScore {
  std::vector<double> loglik;  // [n_choices] sum of log p over the continuation tokens
  int64_t pred = 0;            // argmax loglik (the first on ties)
  int64_t pred_norm = 0;       // argmax loglik / bytes(choice)
};

// Called after each forward pass with (questions done, questions in all).
using McProgress = std::function<void(int64_t done, int64_t total)>;

// Scores every question. max_rows_per_pass bounds the tokens of one forward pass (a question alone
// may exceed it); max_cache_bytes bounds the KV cache (it always holds the largest question's choices).
std::vector<McScore> score_mc(const Decoder& dec, const std::vector<McItem>& items,
                              const std::vector<McEncoded>& encoded, const McProgress& progress = {},
                              int64_t max_rows_per_pass = 4096, size_t max_cache_bytes = size_t{512} << 20);

// Predictions from log-likelihoods: the first index of the maximum of loglik[c] (acc) and of
// loglik[c] / bytes(choices[c]) (acc_norm).
int64_t argmax_first(const std::vector<double>& v);
McScore predict(std::vector<double> loglik, const std::vector<std::string>& choices);

struct McSummary {
  int64_t n = 0;
  double acc = 0, acc_stderr = 0, acc_norm = 0, acc_norm_stderr = 0;  // stderr: NaN when n < 2
};
// Means and standard errors (sample standard deviation / sqrt(n), as the harness's mean_stderr).
McSummary summarize(const std::vector<McItem>& items, const std::vector<McScore>& scores);

}  // namespace moepp::eval
