// Routing statistics (docs/analysis.md): accumulation from forward passes, the driver that runs the
// model over a token stream with and without the gating residual, and the JSON report.
#include "analysis/routing_stats.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "core/error.h"
#include "model/model.h"
#include "tokenizer/tokenizer.h"

namespace moepp::analysis {

using nlohmann::json;

// ---------------------------------------------------------------------------------------------------
// ScoreHistogram

void ScoreHistogram::reset(int64_t n_layers, int n_bins) {
  bins = n_bins;
  per_layer.assign(n_layers, std::vector<int64_t>(n_bins, 0));
  sum.assign(n_layers, 0.0);
  count.assign(n_layers, 0);
}

void ScoreHistogram::add(int64_t layer, float score) {
  float s = std::isfinite(score) ? score : 0.0f;
  s = std::clamp(s, 0.0f, 1.0f);
  const int b = std::min(bins - 1, static_cast<int>(s * static_cast<float>(bins)));
  ++per_layer[layer][b];
  sum[layer] += s;
  ++count[layer];
}

std::vector<int64_t> ScoreHistogram::overall() const {
  std::vector<int64_t> r(bins, 0);
  for (const auto& h : per_layer)
    for (int b = 0; b < bins; ++b) r[b] += h[b];
  return r;
}

double ScoreHistogram::mean(int64_t layer) const {
  return count[layer] > 0 ? sum[layer] / static_cast<double>(count[layer]) : 0.0;
}

double ScoreHistogram::mean() const {
  const double s = std::accumulate(sum.begin(), sum.end(), 0.0);
  const int64_t n = std::accumulate(count.begin(), count.end(), int64_t{0});
  return n > 0 ? s / static_cast<double>(n) : 0.0;
}

// ---------------------------------------------------------------------------------------------------
// RoutingStats

RoutingStats::RoutingStats(const ModelConfig& cfg, int bins) {
  check(bins >= 1, "routing stats: bins must be >= 1, got " + std::to_string(bins));
  n_layers = cfg.n_layers;
  n_experts = cfg.moe.n_experts;
  n_ffn = cfg.moe.n_ffn();
  slot_width = cfg.moe.slot_width();
  vocab = cfg.vocab;
  ffn_slots.assign(n_layers, 0);
  expert_slots.assign(n_layers, std::vector<int64_t>(n_experts, 0));
  token_count.assign(vocab, 0);
  token_ffn.assign(vocab * n_layers, 0);
  has_scores = cfg.moe.router != RouterKind::kRelu;
  has_top2 = has_scores && slot_width >= 2;
  top1.reset(n_layers, bins);
  top2.reset(n_layers, bins);
}

void RoutingStats::add(const ModelState& st, const ModelConfig& cfg) {
  const int64_t N = st.N, L = n_layers, E = n_experts, NF = n_ffn, W = slot_width;
  check(cfg.n_layers == L && cfg.moe.n_experts == E && cfg.vocab == vocab,
        "routing stats: the model config does not match the statistics");
  check(static_cast<int64_t>(st.layers.size()) == L && static_cast<int64_t>(st.tokens.size()) == N,
        "routing stats: the model state holds no forward pass of this model");
  for (int64_t l = 0; l < L; ++l) {
    const MoeForwardState& m = st.layers[l].moe;
    check(m.T == N && m.W == W && static_cast<int64_t>(m.ids.size()) == N * W &&
              static_cast<int64_t>(m.kept.size()) == N * W,
          "routing stats: layer " + std::to_string(l) + " has no routing of " + std::to_string(N) + " tokens");
    if (has_scores)
      check(m.p.shape == std::vector<int64_t>{N, E}, "routing stats: layer " + std::to_string(l) + " has no scores p");
  }
  for (int64_t n = 0; n < N; ++n) {
    const int32_t v = st.tokens[n];
    check(v >= 0 && v < vocab, "routing stats: token id " + std::to_string(v) + " outside the vocabulary");
    ++token_count[v];
  }
  tokens += N;
  for (int64_t l = 0; l < L; ++l) {
    const MoeForwardState& m = st.layers[l].moe;
    std::vector<int64_t>& es = expert_slots[l];
    for (int64_t n = 0; n < N; ++n) {
      int64_t f = 0;
      for (int64_t k = 0; k < W; ++k) {
        const int32_t e = m.ids[n * W + k];
        if (e < 0 || e >= E || !m.kept[n * W + k]) continue;
        ++es[e];
        f += e < NF;
      }
      ffn_slots[l] += f;
      token_ffn[static_cast<int64_t>(st.tokens[n]) * L + l] += f;
      if (has_scores) {
        const float* p = m.p.ptr() + n * E;
        const int32_t i1 = m.ids[n * W];
        if (i1 >= 0) top1.add(l, p[i1]);
        if (has_top2) {
          const int32_t i2 = m.ids[n * W + 1];
          if (i2 >= 0) top2.add(l, p[i2]);
        }
      }
    }
  }
}

double RoutingStats::mean_ffn(int64_t layer) const {
  return tokens > 0 ? static_cast<double>(ffn_slots[layer]) / static_cast<double>(tokens) : 0.0;
}

double RoutingStats::mean_ffn() const {
  if (n_layers == 0) return 0.0;
  double s = 0.0;
  for (int64_t l = 0; l < n_layers; ++l) s += mean_ffn(l);
  return s / static_cast<double>(n_layers);
}

double RoutingStats::token_mean_ffn(int32_t id, int64_t layer) const {
  const int64_t c = token_count[id];
  return c > 0 ? static_cast<double>(token_ffn[static_cast<int64_t>(id) * n_layers + layer]) / static_cast<double>(c)
               : 0.0;
}

double RoutingStats::token_mean_ffn(int32_t id) const {
  if (n_layers == 0) return 0.0;
  double s = 0.0;
  for (int64_t l = 0; l < n_layers; ++l) s += token_mean_ffn(id, l);
  return s / static_cast<double>(n_layers);
}

int64_t RoutingStats::slots(int64_t layer) const {
  return std::accumulate(expert_slots[layer].begin(), expert_slots[layer].end(), int64_t{0});
}

// ---------------------------------------------------------------------------------------------------
// Driver

ModelConfig without_gating_residual(const ModelConfig& cfg) {
  ModelConfig c = cfg;
  c.moe.gating_residual = false;
  return c;
}

std::vector<int32_t> document_tokens(const Tokenizer& tok, const std::vector<std::string>& docs,
                                     const ModelConfig& cfg, int64_t max_tokens) {
  std::vector<int32_t> out;
  const auto full = [&] { return max_tokens > 0 && static_cast<int64_t>(out.size()) >= max_tokens; };
  for (const std::string& d : docs) {
    if (full()) break;
    if (cfg.bos >= 0) out.push_back(cfg.bos);
    for (int32_t id : tok.encode(d)) out.push_back(id);
    if (cfg.eos >= 0) out.push_back(cfg.eos);
  }
  if (max_tokens > 0 && static_cast<int64_t>(out.size()) > max_tokens) out.resize(max_tokens);
  return out;
}

namespace {

// One pass of `model` over the stream; returns the mean cross-entropy.
double run_pass(RoutingStats& stats, const Model& model, const ModelParams& params, const std::vector<int32_t>& tokens,
                const std::vector<int32_t>& targets, int64_t seq_len, int64_t batch) {
  const int64_t n = static_cast<int64_t>(tokens.size());
  const int64_t full = n / seq_len, rest = n % seq_len;
  ModelState st;
  double ce_sum = 0.0;
  int64_t ce_n = 0;
  const auto pass = [&](int64_t begin, int64_t B, int64_t T) {
    model.forward(st, tokens.data() + begin, targets.data() + begin, B, T, params, /*training=*/false);
    stats.add(st, model.config());
    ce_sum += static_cast<double>(st.loss) * static_cast<double>(st.n_targets);
    ce_n += st.n_targets;
  };
  for (int64_t w = 0; w < full; w += batch) pass(w * seq_len, std::min(batch, full - w), seq_len);
  if (rest > 0) pass(full * seq_len, 1, rest);
  return ce_n > 0 ? ce_sum / static_cast<double>(ce_n) : 0.0;
}

}  // namespace

RoutingAnalysis analyze_routing(const ModelConfig& cfg, const ModelParams& params, const std::vector<int32_t>& tokens,
                                const AnalyzeOptions& opt) {
  check(!tokens.empty(), "analyze: the text gives no tokens");
  check(opt.seq_len >= 1, "analyze: --seq-len must be >= 1, got " + std::to_string(opt.seq_len));
  check(opt.seq_len <= cfg.max_pos, "analyze: --seq-len " + std::to_string(opt.seq_len) +
                                        " exceeds the model's max_position_embeddings = " + std::to_string(cfg.max_pos));
  check(opt.batch >= 1, "analyze: batch must be >= 1, got " + std::to_string(opt.batch));
  for (size_t i = 0; i < tokens.size(); ++i)
    check(tokens[i] >= 0 && tokens[i] < cfg.vocab, "analyze: token id " + std::to_string(tokens[i]) + " at position " +
                                                       std::to_string(i) + " is outside the model's vocabulary [0, " +
                                                       std::to_string(cfg.vocab) + ")");
  // Next-token targets across window boundaries (the stream is one sequence cut into windows).
  std::vector<int32_t> targets(tokens.size(), -1);
  for (size_t i = 0; i + 1 < tokens.size(); ++i) targets[i] = tokens[i + 1];

  RoutingAnalysis a;
  a.seq_len = opt.seq_len;
  a.tokens = static_cast<int64_t>(tokens.size());
  a.windows = (a.tokens + opt.seq_len - 1) / opt.seq_len;
  const Model model(cfg);
  model.check_params(params, "analyze: model params");
  a.stats = RoutingStats(cfg, opt.bins);
  a.loss = run_pass(a.stats, model, params, tokens, targets, opt.seq_len, opt.batch);
  if (opt.no_residual_pass && cfg.moe.gating_residual && cfg.n_layers > 1) {
    const Model plain(without_gating_residual(cfg));
    a.no_residual = RoutingStats(plain.config(), opt.bins);
    a.loss_no_residual = run_pass(*a.no_residual, plain, params, tokens, targets, opt.seq_len, opt.batch);
  }
  return a;
}

// ---------------------------------------------------------------------------------------------------
// Report

namespace {

json per_layer_ffn(const RoutingStats& s) {
  std::vector<double> v(s.n_layers);
  for (int64_t l = 0; l < s.n_layers; ++l) v[l] = s.mean_ffn(l);
  return {{"mean", s.mean_ffn()}, {"per_layer", v}};
}

json histogram_json(const ScoreHistogram& h) {
  std::vector<double> means(h.per_layer.size());
  for (size_t l = 0; l < means.size(); ++l) means[l] = h.mean(static_cast<int64_t>(l));
  return {{"overall", h.overall()}, {"per_layer", h.per_layer}, {"mean", h.mean()}, {"mean_per_layer", means}};
}

json scores_json(const RoutingStats& s) {
  if (!s.has_scores) return nullptr;
  json j = {{"top1", histogram_json(s.top1)}};
  j["top2"] = s.has_top2 ? histogram_json(s.top2) : json(nullptr);
  return j;
}

json expert_type_json(const RoutingStats& s, const ModelConfig& cfg) {
  const int64_t L = s.n_layers;
  std::vector<std::vector<double>> frac(4, std::vector<double>(L, 0.0));  // ffn, constant, copy, zero
  std::vector<std::vector<double>> per_expert(L, std::vector<double>(s.n_experts, 0.0));
  for (int64_t l = 0; l < L; ++l) {
    const double total = static_cast<double>(s.slots(l));
    if (total <= 0) continue;
    for (int64_t e = 0; e < s.n_experts; ++e) {
      const double f = static_cast<double>(s.expert_slots[l][e]) / total;
      per_expert[l][e] = f;
      frac[static_cast<int>(cfg.moe.kind(e))][l] += f;
    }
  }
  return {{"ffn", frac[static_cast<int>(ExpertKind::kFfn)]},
          {"constant", frac[static_cast<int>(ExpertKind::kConstant)]},
          {"copy", frac[static_cast<int>(ExpertKind::kCopy)]},
          {"zero", frac[static_cast<int>(ExpertKind::kZero)]},
          {"per_expert", per_expert}};
}

json token_entry(const RoutingStats& s, int32_t id, const Tokenizer* tok) {
  std::vector<double> per_layer(s.n_layers);
  for (int64_t l = 0; l < s.n_layers; ++l) per_layer[l] = s.token_mean_ffn(id, l);
  json j = {{"id", id}, {"count", s.token_count[id]}, {"mean_ffn_experts", s.token_mean_ffn(id)}, {"per_layer", per_layer}};
  if (tok != nullptr && id < tok->vocab_size()) {
    j["piece"] = tok->id_to_piece(id);
    j["text"] = tok->decode({id});
  } else {
    j["piece"] = std::to_string(id);
    j["text"] = "";
  }
  return j;
}

}  // namespace

json routing_json(const RoutingAnalysis& a, const ModelConfig& cfg, const Tokenizer* tok, int64_t top,
                  int64_t min_count) {
  const RoutingStats& s = a.stats;
  check(top >= 0, "analyze: --top must be >= 0");
  json j;
  j["format"] = "moepp-routing-analysis";
  j["version"] = 1;
  const MoeConfig& m = cfg.moe;
  j["model"] = {{"router", router_name(m.router)}, {"n_layers", cfg.n_layers}, {"n_experts", m.n_experts},
                {"n_ffn", m.n_ffn()},             {"n_constant", m.n_constant}, {"n_copy", m.n_copy},
                {"n_zero", m.n_zero},             {"top_k", m.top_k},           {"gating_residual", m.gating_residual},
                {"vocab", cfg.vocab}};
  j["tokens"] = a.tokens;
  j["seq_len"] = a.seq_len;
  j["windows"] = a.windows;
  j["loss"] = a.loss;
  j["loss_no_residual"] = a.no_residual ? json(a.loss_no_residual) : json(nullptr);
  j["ffn_experts_per_token"] = per_layer_ffn(s);
  j["ffn_experts_per_token_no_residual"] = a.no_residual ? per_layer_ffn(*a.no_residual) : json(nullptr);
  j["expert_type_fraction"] = expert_type_json(s, cfg);

  // Vocabulary tokens: the most frequent, then (among tokens seen min_count times) the extremes.
  std::vector<int32_t> seen;
  for (int32_t v = 0; v < s.vocab; ++v)
    if (s.token_count[v] > 0) seen.push_back(v);
  j["unique_tokens"] = seen.size();
  std::vector<int32_t> order = seen;
  std::stable_sort(order.begin(), order.end(),
                   [&](int32_t x, int32_t y) { return s.token_count[x] > s.token_count[y]; });
  json freq = json::array();
  for (int64_t i = 0; i < std::min<int64_t>(top, static_cast<int64_t>(order.size())); ++i)
    freq.push_back(token_entry(s, order[i], tok));
  j["tokens_by_frequency"] = freq;
  std::vector<int32_t> common;
  for (int32_t v : seen)
    if (s.token_count[v] >= min_count) common.push_back(v);
  std::stable_sort(common.begin(), common.end(),
                   [&](int32_t x, int32_t y) { return s.token_mean_ffn(x) > s.token_mean_ffn(y); });
  json most = json::array(), fewest = json::array();
  const int64_t nc = static_cast<int64_t>(common.size());
  for (int64_t i = 0; i < std::min(top, nc); ++i) most.push_back(token_entry(s, common[i], tok));
  for (int64_t i = 0; i < std::min(top, nc); ++i) fewest.push_back(token_entry(s, common[nc - 1 - i], tok));
  j["tokens_by_ffn_experts"] = {{"min_count", min_count}, {"most", most}, {"fewest", fewest}};

  // Score histograms.
  const int bins = s.top1.bins;
  std::vector<double> edges(bins + 1);
  for (int b = 0; b <= bins; ++b) edges[b] = static_cast<double>(b) / bins;
  j["score_histograms"] = {{"bins", bins},
                           {"edges", edges},
                           {"with_residual", scores_json(s)},
                           {"without_residual", a.no_residual ? scores_json(*a.no_residual) : json(nullptr)}};
  return j;
}

}  // namespace moepp::analysis
