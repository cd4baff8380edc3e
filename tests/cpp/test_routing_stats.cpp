// Unit tests of the routing analysis (src/analysis/routing_stats): invariants of the statistics on a
// tiny random model (FFN experts per token in [0, K], per-token means consistent with per-layer means,
// histogram totals), the no-gating-residual pass (differs from the model with a non-zero gate_map,
// equals the model with gate_map zeroed), a hand-built model whose tokens route only to
// zero-computation experts, and the JSON report. The CLI end to end is tests/python/test_analyze.py.
#include <gtest/gtest.h>

#include <cmath>
#include <nlohmann/json.hpp>
#include <numeric>
#include <random>
#include <vector>

#include "analysis/routing_stats.h"
#include "core/error.h"
#include "model/model.h"
#include "test_util.h"

namespace moepp {
namespace {

using namespace test;

using analysis::AnalyzeOptions;
using analysis::RoutingAnalysis;
using analysis::RoutingStats;

ModelConfig tiny_config(const std::string& router = "moepp", int64_t layers = 3) {
  nlohmann::json j = {{"vocab_size", 37},         {"hidden_size", 16},        {"intermediate_size", 24},
                      {"num_hidden_layers", layers}, {"num_attention_heads", 4}, {"num_key_value_heads", 2},
                      {"max_position_embeddings", 64}, {"num_experts", {8}},  {"moe_router", router},
                      // the 7B checkpoint's router flags (one-layer gate, logits norm, unscaled input)
                      {"moe_2layer_gate", false}, {"moe_use_logits_norm", true}, {"moe_feature_no_mul_topk", true}};
  return ModelConfig::from_json(j, "tiny");
}

ModelParams tiny_params(const ModelConfig& c, uint64_t seed, float std = 0.3f) {
  ModelParams p = ModelParams::zeros(c);
  p.init_random(c, seed, std);
  return p;
}

int64_t total(const std::vector<int64_t>& v) { return std::accumulate(v.begin(), v.end(), int64_t{0}); }

TEST(RoutingStats, Invariants) {
  const ModelConfig c = tiny_config();
  const ModelParams p = tiny_params(c, 3);
  const std::vector<int32_t> tokens = random_tokens(150, c.vocab, 7);  // 4 full windows of 32 + 22
  AnalyzeOptions opt;
  opt.seq_len = 32;
  opt.batch = 3;
  const RoutingAnalysis a = analysis::analyze_routing(c, p, tokens, opt);
  const RoutingStats& s = a.stats;
  const int64_t N = 150, L = c.n_layers, K = c.moe.top_k;
  EXPECT_EQ(a.tokens, N);
  EXPECT_EQ(a.windows, 5);
  EXPECT_EQ(s.tokens, N);
  EXPECT_TRUE(std::isfinite(a.loss) && a.loss > 0.0);
  for (int64_t l = 0; l < L; ++l) {
    EXPECT_GE(s.mean_ffn(l), 0.0);
    EXPECT_LE(s.mean_ffn(l), static_cast<double>(K));
    EXPECT_EQ(s.slots(l), N * K) << "moepp: every token has K slots";
    // Per-token means, weighted by occurrences, give the per-layer mean.
    double weighted = 0.0;
    int64_t occurrences = 0;
    for (int32_t v = 0; v < c.vocab; ++v) {
      weighted += s.token_mean_ffn(v, l) * static_cast<double>(s.token_count[v]);
      occurrences += s.token_count[v];
    }
    EXPECT_EQ(occurrences, N);
    EXPECT_NEAR(weighted / static_cast<double>(N), s.mean_ffn(l), 1e-9);
  }
  for (int32_t v = 0; v < c.vocab; ++v) {
    EXPECT_GE(s.token_mean_ffn(v), 0.0);
    EXPECT_LE(s.token_mean_ffn(v), static_cast<double>(K));
  }
  // Histograms: one top-1 and one top-2 score per token and layer; top-1 >= top-2 on average.
  ASSERT_TRUE(s.has_scores && s.has_top2);
  EXPECT_EQ(total(s.top1.overall()), N * L);
  EXPECT_EQ(total(s.top2.overall()), N * L);
  for (int64_t l = 0; l < L; ++l) {
    EXPECT_EQ(total(s.top1.per_layer[l]), N);
    EXPECT_GE(s.top1.mean(l), s.top2.mean(l));
    EXPECT_GT(s.top1.mean(l), 1.0 / static_cast<double>(c.moe.n_experts) - 1e-6);
  }
  // The model's own counter (kept FFN slots / tokens) agrees for a single pass.
  ModelState st;
  const Model m(c);
  m.forward(st, tokens.data(), nullptr, 1, 32, p, false);
  RoutingStats one(c, 50);
  one.add(st, c);
  for (int64_t l = 0; l < L; ++l) EXPECT_NEAR(one.mean_ffn(l), st.ffn_experts_per_token[l], 1e-6);
}

TEST(RoutingStats, NoResidualPass) {
  const ModelConfig c = tiny_config();
  ModelParams p = tiny_params(c, 5);
  for (auto& l : p.layers)  // a strong residual map, so that it changes the routing
    for (float& x : l.moe.gate_map.data) x *= 10.0f;
  const std::vector<int32_t> tokens = random_tokens(96, c.vocab, 11);
  AnalyzeOptions opt;
  opt.seq_len = 32;
  const RoutingAnalysis a = analysis::analyze_routing(c, p, tokens, opt);
  ASSERT_TRUE(a.no_residual.has_value());
  const RoutingStats& r = *a.no_residual;
  EXPECT_EQ(total(r.top1.overall()), 96 * c.n_layers);
  EXPECT_EQ(total(r.top2.overall()), 96 * c.n_layers);
  // Layer 0 never uses the residual: identical there; later layers differ.
  EXPECT_EQ(a.stats.top1.per_layer[0], r.top1.per_layer[0]);
  EXPECT_EQ(a.stats.top2.per_layer[0], r.top2.per_layer[0]);
  EXPECT_NE(a.stats.top1.overall(), r.top1.overall());
  EXPECT_NE(a.stats.top2.overall(), r.top2.overall());

  // Removing the residual through the config equals zeroing every gate_map.
  ModelParams pz = p;
  for (auto& l : pz.layers) l.moe.gate_map.zero();
  AnalyzeOptions single = opt;
  single.no_residual_pass = false;
  const RoutingAnalysis z = analysis::analyze_routing(c, pz, tokens, single);
  EXPECT_FALSE(z.no_residual.has_value());
  EXPECT_EQ(z.stats.top1.per_layer, r.top1.per_layer);
  EXPECT_EQ(z.stats.top2.per_layer, r.top2.per_layer);
  EXPECT_EQ(z.stats.ffn_slots, r.ffn_slots);
  EXPECT_EQ(z.stats.token_ffn, r.token_ffn);
  EXPECT_NEAR(z.loss, a.loss_no_residual, 1e-6);

  // A model without the residual gets no second pass.
  nlohmann::json j = tiny_config().to_json();
  j["moe_gating_residual"] = false;
  const ModelConfig c2 = ModelConfig::from_json(j, "no residual");
  const RoutingAnalysis b = analysis::analyze_routing(c2, tiny_params(c2, 5), tokens, opt);
  EXPECT_FALSE(b.no_residual.has_value());
}

// A model in which token kZc routes only to zero-computation experts and every other token only to
// FFN experts: the residual stream stays on one axis per token (attention output 0, FFN output 0,
// constant experts' v = 0, so the copy/constant outputs are multiples of x).
TEST(RoutingStats, ZeroComputationOnlyCountsZero) {
  const ModelConfig c = tiny_config("moepp", 2);
  const int64_t D = c.hidden, E = c.moe.n_experts, NF = c.moe.n_ffn();
  constexpr int32_t kZc = 5;
  ModelParams p = tiny_params(c, 9);
  p.embed.zero();
  for (int64_t v = 0; v < c.vocab; ++v) p.embed.data[v * D + (v == kZc ? 0 : 1)] = 1.0f;
  for (auto& l : p.layers) {
    l.wo.zero();
    l.mlp_norm.data.assign(D, 1.0f);
    l.moe.gate_map.zero();
    for (Tensor& d : l.moe.down) d.zero();
    for (Tensor& v : l.moe.const_v) v.zero();
    l.moe.wg.zero();
    for (int64_t e = 0; e < E; ++e) {  // FFN experts look at axis 1, zero-computation experts at axis 0
      l.moe.wg.data[e * D + 0] = e < NF ? -1.0f : 1.0f;
      l.moe.wg.data[e * D + 1] = e < NF ? 1.0f : -1.0f;
    }
  }
  std::vector<int32_t> tokens = random_tokens(64, c.vocab, 13);
  for (size_t i = 0; i < tokens.size(); i += 3) tokens[i] = kZc;
  AnalyzeOptions opt;
  opt.seq_len = 16;
  const RoutingAnalysis a = analysis::analyze_routing(c, p, tokens, opt);
  const RoutingStats& s = a.stats;
  ASSERT_GT(s.token_count[kZc], 0);
  for (int64_t l = 0; l < c.n_layers; ++l) EXPECT_EQ(s.token_mean_ffn(kZc, l), 0.0) << "layer " << l;
  EXPECT_EQ(s.token_mean_ffn(kZc), 0.0);
  for (int32_t v = 0; v < c.vocab; ++v) {
    if (v != kZc && s.token_count[v] > 0) {
      EXPECT_EQ(s.token_mean_ffn(v), 2.0) << "token " << v;
    }
  }
  const double zc_share = static_cast<double>(s.token_count[kZc]) / static_cast<double>(s.tokens);
  EXPECT_NEAR(s.mean_ffn(), 2.0 * (1.0 - zc_share), 1e-12);

  const nlohmann::json j = analysis::routing_json(a, c, nullptr, 5, 1);
  const auto& types = j.at("expert_type_fraction");
  for (int64_t l = 0; l < c.n_layers; ++l) {
    const double sum = types.at("ffn")[l].get<double>() + types.at("constant")[l].get<double>() +
                       types.at("copy")[l].get<double>() + types.at("zero")[l].get<double>();
    EXPECT_NEAR(sum, 1.0, 1e-9);
    EXPECT_NEAR(types.at("ffn")[l].get<double>(), 1.0 - zc_share, 1e-9);
  }
  EXPECT_EQ(j.at("tokens_by_ffn_experts").at("fewest")[0].at("id").get<int32_t>(), kZc);
  EXPECT_EQ(j.at("tokens_by_ffn_experts").at("fewest")[0].at("mean_ffn_experts").get<double>(), 0.0);
}

TEST(RoutingStats, ReluRouterAndJson) {
  const ModelConfig c = tiny_config("relu", 2);
  const ModelParams p = tiny_params(c, 21);
  const std::vector<int32_t> tokens = random_tokens(40, c.vocab, 17);
  AnalyzeOptions opt;
  opt.seq_len = 20;
  const RoutingAnalysis a = analysis::analyze_routing(c, p, tokens, opt);
  EXPECT_FALSE(a.stats.has_scores);
  for (int64_t l = 0; l < c.n_layers; ++l) {
    EXPECT_GE(a.stats.mean_ffn(l), 0.0);
    EXPECT_LE(a.stats.mean_ffn(l), static_cast<double>(c.moe.n_experts));  // relu: 0..E active experts
  }
  const nlohmann::json j = analysis::routing_json(a, c, nullptr, 3);
  EXPECT_TRUE(j.at("score_histograms").at("with_residual").is_null());
  EXPECT_EQ(j.at("tokens_by_frequency").size(), 3u);
  EXPECT_EQ(j.at("ffn_experts_per_token").at("per_layer").size(), 2u);
  EXPECT_EQ(j.at("model").at("router"), "relu");
}

TEST(RoutingStats, BadInputs) {
  const ModelConfig c = tiny_config();
  const ModelParams p = tiny_params(c, 1);
  AnalyzeOptions opt;
  opt.seq_len = 16;
  EXPECT_THROW(analysis::analyze_routing(c, p, {}, opt), Error);
  EXPECT_THROW(analysis::analyze_routing(c, p, {1, 2, 99}, opt), Error);  // outside the vocabulary
  opt.seq_len = 65;  // > max_position_embeddings
  EXPECT_THROW(analysis::analyze_routing(c, p, {1, 2, 3}, opt), Error);
}

}  // namespace
}  // namespace moepp
