// Log-likelihood multiple choice: the JSONL task reader, harness-style tokenisation, batched scoring
// over the inference decoder (shared context prefill, one KV cache slot per choice), and the metrics.
#include "eval/multiple_choice.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <fstream>
#include <limits>
#include <string>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "eval/log_prob.h"

namespace moepp::eval {

namespace {

bool is_blank(const std::string& s) {
  return std::all_of(s.begin(), s.end(),
                     [](unsigned char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n'; });
}

bool is_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f'; }

McItem parse_item(const std::string& text, const std::string& where) {
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    throw Error(where + ": not valid JSON: " + e.what());
  }
  check(j.is_object(), where + ": expected a JSON object {\"context\": ..., \"choices\": [...], \"gold\": ...}");
  McItem it;
  auto ctx = j.find("context");
  check(ctx != j.end(), where + ": missing field 'context'");
  check(ctx->is_string(), where + ": field 'context' must be a string");
  it.context = ctx->get<std::string>();
  auto ch = j.find("choices");
  check(ch != j.end(), where + ": missing field 'choices'");
  check(ch->is_array(), where + ": field 'choices' must be an array of strings");
  check(ch->size() >= 2,
        where + ": field 'choices' must hold at least 2 choices (has " + std::to_string(ch->size()) + ")");
  for (size_t c = 0; c < ch->size(); ++c) {
    const nlohmann::json& s = (*ch)[c];
    check(s.is_string(), where + ": field 'choices[" + std::to_string(c) + "]' must be a string");
    it.choices.push_back(s.get<std::string>());
    check(!it.choices.back().empty(), where + ": field 'choices[" + std::to_string(c) + "]' is empty");
  }
  auto g = j.find("gold");
  check(g != j.end(), where + ": missing field 'gold'");
  check(g->is_number_integer(), where + ": field 'gold' must be an integer index into 'choices'");
  const bool in_range = g->is_number_unsigned()
                            ? g->get<uint64_t>() < it.choices.size()
                            : (g->get<int64_t>() >= 0 && g->get<int64_t>() < static_cast<int64_t>(it.choices.size()));
  check(in_range,
        where + ": field 'gold' = " + g->dump() + " is out of range [0, " + std::to_string(it.choices.size()) + ")");
  it.gold = g->get<int64_t>();
  return it;
}

}  // namespace

std::vector<McItem> read_mc_tasks(const std::string& path, int64_t limit) {
  std::ifstream f(path, std::ios::binary);
  check(static_cast<bool>(f), path + ": cannot open the task file");
  std::vector<McItem> items;
  std::string line;
  int64_t n = 0;
  while (std::getline(f, line)) {
    ++n;
    if (is_blank(line)) continue;
    McItem it = parse_item(line, path + ":" + std::to_string(n));  // validates every line, kept or not
    it.line = n;
    if (limit <= 0 || static_cast<int64_t>(items.size()) < limit) items.push_back(std::move(it));
  }
  check(!f.bad(), path + ": read error");
  check(!items.empty(), path + ": the task file holds no item");
  return items;
}

EncodedPair encode_pair(const Encoder& encode, std::string_view context, std::string_view continuation) {
  size_t n = context.size();
  while (n > 0 && is_space(context[n - 1])) --n;
  const std::string ctx(context.substr(0, n));
  const std::string whole = ctx + std::string(context.substr(n)) + std::string(continuation);
  EncodedPair p;
  p.context = encode(ctx);
  const std::vector<int32_t> all = encode(whole);
  if (all.size() > p.context.size())
    p.continuation.assign(all.begin() + static_cast<std::ptrdiff_t>(p.context.size()), all.end());
  return p;
}

McEncoded encode_item(const Encoder& encode, const McItem& item, int32_t bos, int64_t max_len,
                      const std::string& where) {
  McEncoded e;
  for (size_t c = 0; c < item.choices.size(); ++c) {
    EncodedPair p = encode_pair(encode, item.context, item.choices[c]);
    if (c == 0) {
      e.context.push_back(bos);
      e.context.insert(e.context.end(), p.context.begin(), p.context.end());
    }
    const std::string field = where + ": choices[" + std::to_string(c) + "]";
    check(!p.continuation.empty(), field + ": gives no token after the context's tokens");
    check(static_cast<int64_t>(p.continuation.size()) <= max_len,
          field + ": " + std::to_string(p.continuation.size()) +
              " tokens, more than the model's max_position_embeddings " + std::to_string(max_len));
    const int64_t input = static_cast<int64_t>(e.context.size() + p.continuation.size()) - 1;
    e.drop.push_back(std::max<int64_t>(0, input - max_len));
    e.continuation.push_back(std::move(p.continuation));
  }
  return e;
}

int64_t argmax_first(const std::vector<double>& v) {
  int64_t best = 0;
  for (size_t i = 1; i < v.size(); ++i)
    if (v[i] > v[static_cast<size_t>(best)]) best = static_cast<int64_t>(i);
  return best;
}

McScore predict(std::vector<double> loglik, const std::vector<std::string>& choices) {
  McScore s;
  std::vector<double> norm(loglik.size());
  for (size_t c = 0; c < loglik.size(); ++c) norm[c] = loglik[c] / static_cast<double>(choices.at(c).size());
  s.pred = argmax_first(loglik);
  s.pred_norm = argmax_first(norm);
  s.loglik = std::move(loglik);
  return s;
}

namespace {

// No choice drops context tokens, so one prefill of the context serves every choice.
bool shares_context(const McEncoded& e) {
  return std::all_of(e.drop.begin(), e.drop.end(), [](int64_t d) { return d == 0; });
}

// The KV cache for scoring: per question the tokens it puts through the model, the longest choice
// input, and the slots (at least the largest question's choices, else within max_cache_bytes).
struct CachePlan {
  std::vector<int64_t> rows;  // [questions]
  int64_t max_len = 1;
  int64_t n_slots = 0;
};

CachePlan plan_cache(const ModelConfig& cfg, const std::vector<McItem>& items, const std::vector<McEncoded>& encoded,
                     size_t max_cache_bytes) {
  const int64_t Q = static_cast<int64_t>(items.size());
  CachePlan plan;
  int64_t max_choices = 1;
  plan.rows.resize(static_cast<size_t>(Q));
  for (int64_t q = 0; q < Q; ++q) {
    const McEncoded& e = encoded[static_cast<size_t>(q)];
    check(
        e.continuation.size() == items[static_cast<size_t>(q)].choices.size() && e.drop.size() == e.continuation.size(),
        "score_mc: an encoded item does not match its choices");
    const bool shared = shares_context(e);
    int64_t r = shared ? static_cast<int64_t>(e.context.size()) : 0;
    for (size_t c = 0; c < e.continuation.size(); ++c) {
      const int64_t ctx = static_cast<int64_t>(e.context.size()) - e.drop[c];
      const int64_t n = static_cast<int64_t>(e.continuation[c].size());
      check(ctx >= 1 && n >= 1 && ctx + n - 1 <= cfg.max_pos, "score_mc: an encoded item does not fit the model");
      if (!shared) r += ctx;
      r += n - 1;
      plan.max_len = std::max(plan.max_len, ctx + n - 1);
    }
    plan.rows[static_cast<size_t>(q)] = r;
    max_choices = std::max<int64_t>(max_choices, static_cast<int64_t>(e.continuation.size()));
  }
  const size_t slot_bytes =
      static_cast<size_t>(2 * cfg.n_layers * plan.max_len * cfg.n_kv_heads * cfg.head_dim) * sizeof(float);
  int64_t total_choices = 0;
  for (const McEncoded& e : encoded) total_choices += static_cast<int64_t>(e.continuation.size());
  plan.n_slots = std::min(
      total_choices,
      std::max<int64_t>(max_choices, std::min<int64_t>(256, static_cast<int64_t>(max_cache_bytes / slot_bytes))));
  return plan;
}

// The decoder and what its passes reuse.
struct Pass {
  const Decoder& dec;
  KvCache cache;
  DecoderScratch scratch;
  Tensor logits;
  std::vector<DecodeChunk> batch;
};

// A group of questions [first, last), scored together: their choices fill slots 0 .. used - 1, and
// per question `base` is its first slot and `shared` whether one prefill serves all its choices;
// first_row is, per choice of the group, the phase-1 logits row of its first continuation token.
struct Group {
  int64_t first = 0, last = 0, used = 0;
  std::vector<int64_t> first_row, base;
  std::vector<char> shared;
};

// The questions from `first` on that fit n_slots and max_rows_per_pass (at least one).
Group next_group(int64_t first, const std::vector<McEncoded>& encoded, const CachePlan& plan,
                 int64_t max_rows_per_pass) {
  const int64_t Q = static_cast<int64_t>(encoded.size());
  Group g;
  g.first = g.last = first;
  int64_t group_rows = 0;
  while (g.last < Q) {
    const int64_t k = static_cast<int64_t>(encoded[static_cast<size_t>(g.last)].continuation.size());
    const int64_t r = plan.rows[static_cast<size_t>(g.last)];
    if (g.last > first && (g.used + k > plan.n_slots || group_rows + r > max_rows_per_pass)) break;
    g.used += k;
    group_rows += r;
    ++g.last;
  }
  return g;
}

// Phase 1: prefills each context of the group (once per question when no choice drops context
// tokens) in one pass; the last row's logits give each choice's first continuation token. Fills
// g.first_row, g.base and g.shared.
void prefill_contexts(Pass& p, const std::vector<McEncoded>& encoded, Group& g) {
  p.batch.clear();
  int64_t slot = 0;
  for (int64_t q = g.first; q < g.last; ++q) {
    const McEncoded& e = encoded[static_cast<size_t>(q)];
    const bool shared = shares_context(e);
    g.base.push_back(slot);
    g.shared.push_back(shared);
    for (size_t c = 0; c < e.continuation.size(); ++c) {
      if (shared && c > 0) {
        g.first_row.push_back(g.first_row.back());
        continue;
      }
      g.first_row.push_back(static_cast<int64_t>(p.batch.size()));
      p.batch.push_back(DecodeChunk{slot + static_cast<int64_t>(c), e.context.data() + e.drop[c],
                                    static_cast<int64_t>(e.context.size()) - e.drop[c], false});
    }
    slot += static_cast<int64_t>(e.continuation.size());
  }
  p.dec.forward(p.logits, p.cache, p.batch, p.scratch);
}

// Copies slot b's keys and values into slots b + 1 .. b + n_choices - 1 (through the decoder, so that
// the followers of an expert group copy too).
void copy_context(const Decoder& dec, KvCache& cache, int64_t b, size_t n_choices) {
  for (size_t c = 1; c < n_choices; ++c) dec.copy_cache_slot(cache, b + static_cast<int64_t>(c), b);
}

// After phase 1: sets out[q].loglik to the first continuation token's log p for every choice, and
// copies each shared context into its other choices' slots.
void score_first_tokens(Pass& p, const std::vector<McEncoded>& encoded, const Group& g, std::vector<McScore>& out) {
  const int64_t V = p.dec.config().vocab;
  size_t k = 0;
  for (int64_t q = g.first; q < g.last; ++q) {
    const McEncoded& e = encoded[static_cast<size_t>(q)];
    std::vector<double>& ll = out[static_cast<size_t>(q)].loglik;
    ll.assign(e.continuation.size(), 0.0);
    for (size_t c = 0; c < e.continuation.size(); ++c, ++k) {
      ll[c] = log_prob(p.logits.ptr() + static_cast<size_t>(g.first_row[k] * V), V, e.continuation[c][0]);
    }
    if (!g.shared[static_cast<size_t>(q - g.first)]) continue;  // every choice prefilled its own
    copy_context(p.dec, p.cache, g.base[static_cast<size_t>(q - g.first)], e.continuation.size());
  }
}

// Phase 2: every continuation but its last token, each in its choice's slot, in one pass (row j
// predicts token j+1); adds their log p and sets each question's predictions.
void score_continuations(Pass& p, const std::vector<McItem>& items, const std::vector<McEncoded>& encoded,
                         const Group& g, std::vector<McScore>& out) {
  const int64_t V = p.dec.config().vocab;
  p.batch.clear();
  for (int64_t q = g.first; q < g.last; ++q) {
    const McEncoded& e = encoded[static_cast<size_t>(q)];
    for (size_t c = 0; c < e.continuation.size(); ++c) {
      const int64_t n = static_cast<int64_t>(e.continuation[c].size());
      if (n >= 2) {
        p.batch.push_back(DecodeChunk{g.base[static_cast<size_t>(q - g.first)] + static_cast<int64_t>(c),
                                      e.continuation[c].data(), n - 1, true});
      }
    }
  }
  if (!p.batch.empty()) p.dec.forward(p.logits, p.cache, p.batch, p.scratch);
  int64_t row = 0;
  for (int64_t q = g.first; q < g.last; ++q) {
    const McEncoded& e = encoded[static_cast<size_t>(q)];
    std::vector<double>& ll = out[static_cast<size_t>(q)].loglik;
    for (size_t c = 0; c < e.continuation.size(); ++c) {
      const std::vector<int32_t>& t = e.continuation[c];
      for (size_t j = 1; j < t.size(); ++j, ++row) {
        ll[c] += log_prob(p.logits.ptr() + static_cast<size_t>(row * V), V, t[j]);
      }
    }
    out[static_cast<size_t>(q)] = predict(std::move(ll), items[static_cast<size_t>(q)].choices);
  }
}

}  // namespace

std::vector<McScore> score_mc(const Decoder& dec, const std::vector<McItem>& items,
                              const std::vector<McEncoded>& encoded, const McProgress& progress,
                              int64_t max_rows_per_pass, size_t max_cache_bytes) {
  check(items.size() == encoded.size(), "score_mc: items and encoded items differ in number");
  const int64_t Q = static_cast<int64_t>(items.size());
  const CachePlan plan = plan_cache(dec.config(), items, encoded, max_cache_bytes);
  Pass p{dec, dec.make_cache(plan.n_slots, plan.max_len), {}, {}, {}};
  std::vector<McScore> out(static_cast<size_t>(Q));
  for (int64_t first = 0; first < Q;) {
    Group g = next_group(first, encoded, plan, max_rows_per_pass);
    for (int64_t s = 0; s < g.used; ++s) p.cache.clear(s);
    prefill_contexts(p, encoded, g);
    score_first_tokens(p, encoded, g, out);
    score_continuations(p, items, encoded, g, out);
    first = g.last;
    if (progress) progress(first, Q);
  }
  return out;
}

McSummary summarize(const std::vector<McItem>& items, const std::vector<McScore>& scores) {
  check(items.size() == scores.size(), "summarize: items and scores differ in number");
  McSummary s;
  s.n = static_cast<int64_t>(items.size());
  auto mean_stderr = [&](auto hit, double& mean, double& stderr_) {
    double sum = 0;
    for (size_t i = 0; i < items.size(); ++i) sum += hit(i) ? 1.0 : 0.0;
    mean = s.n ? sum / static_cast<double>(s.n) : 0.0;
    if (s.n < 2) {
      stderr_ = std::numeric_limits<double>::quiet_NaN();
      return;
    }
    double ss = 0;
    for (size_t i = 0; i < items.size(); ++i) {
      const double d = (hit(i) ? 1.0 : 0.0) - mean;
      ss += d * d;
    }
    stderr_ = std::sqrt(ss / static_cast<double>(s.n - 1)) / std::sqrt(static_cast<double>(s.n));
  };
  mean_stderr([&](size_t i) { return scores[i].pred == items[i].gold; }, s.acc, s.acc_stderr);
  mean_stderr([&](size_t i) { return scores[i].pred_norm == items[i].gold; }, s.acc_norm, s.acc_norm_stderr);
  return s;
}

}  // namespace moepp::eval
