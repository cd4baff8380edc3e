// Sliding-window perplexity (HF strided method) over the inference decoder.
#include "eval/perplexity.h"

#include <algorithm>
#include <cmath>
#include <string>

#include "core/error.h"
#include "eval/log_prob.h"

namespace moepp::eval {

std::vector<Window> sliding_windows(int64_t n_tokens, int64_t window, int64_t stride) {
  check(n_tokens >= 2, "perplexity: the text gives " + std::to_string(n_tokens) +
                           " token(s) with bos; at least 2 are needed to score one");
  check(window >= 2, "perplexity: window " + std::to_string(window) + " must be >= 2");
  check(stride >= 1 && stride <= window,
        "perplexity: stride " + std::to_string(stride) + " must be in [1, window = " + std::to_string(window) + "]");
  std::vector<Window> out;
  int64_t prev_end = 0;
  for (int64_t begin = 0; begin < n_tokens; begin += stride) {
    Window w;
    w.begin = begin;
    w.end = std::min(begin + window, n_tokens);
    w.score_from = std::max(prev_end, begin + 1);
    if (w.score_from < w.end) out.push_back(w);
    prev_end = w.end;
    if (w.end == n_tokens) break;
  }
  return out;
}

double PerplexityResult::perplexity() const { return std::exp(mean_nll()); }

double bits_per_byte(double nll_sum, int64_t bytes) {
  return bytes > 0 ? nll_sum / std::log(2.0) / static_cast<double>(bytes) : 0.0;
}

PerplexityResult score_perplexity(const Decoder& dec, const std::vector<int32_t>& tokens, const PerplexityOptions& opt,
                                  const PerplexityProgress& progress) {
  const ModelConfig& cfg = dec.config();
  check(opt.window <= cfg.max_pos, "perplexity: window " + std::to_string(opt.window) +
                                       " exceeds the model's max_position_embeddings " + std::to_string(cfg.max_pos));
  const std::vector<Window> windows = sliding_windows(static_cast<int64_t>(tokens.size()), opt.window, opt.stride);
  for (size_t i = 0; i < tokens.size(); ++i) {
    check(tokens[i] >= 0 && tokens[i] < cfg.vocab,
          "perplexity: token id " + std::to_string(tokens[i]) + " at position " + std::to_string(i) +
              " is outside the model's vocabulary (" + std::to_string(cfg.vocab) + ")");
  }
  PerplexityResult r;
  r.tokens = static_cast<int64_t>(tokens.size());
  r.windows = static_cast<int64_t>(windows.size());
  int64_t total = 0;
  for (const Window& w : windows) total += w.scored();

  const int64_t per_pass = std::clamp<int64_t>(opt.max_rows_per_pass / opt.window, 1, 16);
  const int64_t slots = std::min<int64_t>(per_pass, r.windows);
  KvCache cache = dec.make_cache(slots, opt.window);
  DecoderScratch scratch;
  Tensor logits;
  const int64_t V = cfg.vocab;
  std::vector<DecodeChunk> batch;
  for (size_t first = 0; first < windows.size(); first += static_cast<size_t>(slots)) {
    const size_t last = std::min(windows.size(), first + static_cast<size_t>(slots));
    batch.clear();
    for (size_t i = first; i < last; ++i) {
      const int64_t slot = static_cast<int64_t>(i - first);
      cache.clear(slot);
      batch.push_back(DecodeChunk{slot, tokens.data() + windows[i].begin, windows[i].end - windows[i].begin, true});
    }
    dec.forward(logits, cache, batch, scratch);
    int64_t row0 = 0;  // first logits row of the window
    for (size_t i = first; i < last; ++i) {
      const Window& w = windows[i];
      for (int64_t p = w.score_from; p < w.end; ++p) {
        const float* row = logits.ptr() + static_cast<size_t>(row0 + (p - 1 - w.begin)) * static_cast<size_t>(V);
        r.nll_sum -= log_prob(row, V, tokens[static_cast<size_t>(p)]);
      }
      r.scored += w.scored();
      row0 += w.end - w.begin;
    }
    if (progress) progress(r.scored, total, r.nll_sum);
  }
  if (scratch.moe_rows > 0)
    r.ffn_experts_per_token = static_cast<double>(scratch.ffn_slots) / static_cast<double>(scratch.moe_rows);
  return r;
}

}  // namespace moepp::eval
