// Unit tests of the decoder (src/model) and of model checkpoints (model/checkpoint): tiled attention
// against a naive reference, training steps that lower the loss, batch consistency, the fused and the
// recomputing head backward, checkpoint round trip and every checkpoint/config fault. End-to-end parity
// with PyTorch is in tests/python/test_model_parity.py.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "core/error.h"
#include "model/checkpoint.h"
#include "io/safetensors.h"
#include "model/attention.h"
#include "model/model.h"
#include "test_util.h"

namespace moepp {
namespace {

using namespace test;

namespace fs = std::filesystem;

// ---------------------------------------------------------------------------------------------------
// Attention: tiled vs naive (double precision, full T x T).

struct NaiveAttn {
  std::vector<double> out, lse, dq, dk, dv;
};

NaiveAttn naive_attention(const std::vector<float>& q, const std::vector<float>& k, const std::vector<float>& v,
                          const std::vector<float>& dout, const AttnShape& s) {
  const int64_t B = s.B, T = s.T, H = s.H, KVH = s.KVH, hd = s.hd, G = H / KVH, ldq = H * hd, ldk = KVH * hd;
  const double scale = 1.0 / std::sqrt(static_cast<double>(hd));
  NaiveAttn r;
  r.out.assign(B * T * ldq, 0.0);
  r.lse.assign(B * T * H, 0.0);
  r.dq.assign(B * T * ldq, 0.0);
  r.dk.assign(B * T * ldk, 0.0);
  r.dv.assign(B * T * ldk, 0.0);
  std::vector<double> P(T * T), dP(T * T);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < H; ++h) {
      const int64_t g = h / G;
      auto Q = [&](int64_t t, int64_t d) { return static_cast<double>(q[(b * T + t) * ldq + h * hd + d]); };
      auto K = [&](int64_t t, int64_t d) { return static_cast<double>(k[(b * T + t) * ldk + g * hd + d]); };
      auto Vv = [&](int64_t t, int64_t d) { return static_cast<double>(v[(b * T + t) * ldk + g * hd + d]); };
      auto dO = [&](int64_t t, int64_t d) { return static_cast<double>(dout[(b * T + t) * ldq + h * hd + d]); };
      for (int64_t i = 0; i < T; ++i) {
        double mx = -1e300;
        for (int64_t j = 0; j <= i; ++j) {
          double sc = 0;
          for (int64_t d = 0; d < hd; ++d) sc += Q(i, d) * K(j, d);
          P[i * T + j] = sc * scale;
          mx = std::max(mx, P[i * T + j]);
        }
        double sum = 0;
        for (int64_t j = 0; j <= i; ++j) sum += std::exp(P[i * T + j] - mx);
        r.lse[(b * T + i) * H + h] = mx + std::log(sum);
        for (int64_t j = 0; j <= i; ++j) P[i * T + j] = std::exp(P[i * T + j] - mx) / sum;
        for (int64_t d = 0; d < hd; ++d) {
          double o = 0;
          for (int64_t j = 0; j <= i; ++j) o += P[i * T + j] * Vv(j, d);
          r.out[(b * T + i) * ldq + h * hd + d] = o;
        }
      }
      for (int64_t i = 0; i < T; ++i) {
        double rowdot = 0;
        for (int64_t j = 0; j <= i; ++j) {
          double dp = 0;
          for (int64_t d = 0; d < hd; ++d) dp += dO(i, d) * Vv(j, d);
          dP[i * T + j] = dp;
          rowdot += dp * P[i * T + j];
        }
        for (int64_t j = 0; j <= i; ++j) {
          const double ds = P[i * T + j] * (dP[i * T + j] - rowdot) * scale;
          for (int64_t d = 0; d < hd; ++d) {
            r.dq[(b * T + i) * ldq + h * hd + d] += ds * K(j, d);
            r.dk[(b * T + j) * ldk + g * hd + d] += ds * Q(i, d);
            r.dv[(b * T + j) * ldk + g * hd + d] += P[i * T + j] * dO(i, d);
          }
        }
      }
    }
  return r;
}

double max_abs_diff(const std::vector<float>& a, const std::vector<double>& b) {
  double m = 0;
  for (size_t i = 0; i < a.size(); ++i) m = std::max(m, std::abs(static_cast<double>(a[i]) - b[i]));
  return m;
}

struct AttnCase {
  int64_t B, T, H, KVH, hd, bq, bk;
};

std::string case_name(const AttnCase& c) {
  std::ostringstream o;
  o << "B" << c.B << "_T" << c.T << "_H" << c.H << "_KV" << c.KVH << "_hd" << c.hd << "_bq" << c.bq << "_bk" << c.bk;
  return o.str();
}
void PrintTo(const AttnCase& c, std::ostream* os) { *os << case_name(c); }

class ModelAttentionTiles : public ::testing::TestWithParam<AttnCase> {};

TEST_P(ModelAttentionTiles, MatchesNaiveForwardAndBackward) {
  const AttnCase c = GetParam();
  const AttnShape s{c.B, c.T, c.H, c.KVH, c.hd};
  std::mt19937 rng(static_cast<unsigned>(c.T * 131 + c.bq * 7 + c.bk));
  const int64_t nq = c.B * c.T * c.H * c.hd, nk = c.B * c.T * c.KVH * c.hd;
  const auto q = randn(nq, rng, 1.5f), k = randn(nk, rng, 1.5f), v = randn(nk, rng), dout = randn(nq, rng);
  const NaiveAttn ref = naive_attention(q, k, v, dout, s);
  std::vector<float> out(nq), lse(c.B * c.T * c.H);
  attention_forward(out.data(), lse.data(), q.data(), k.data(), v.data(), s, {c.bq, c.bk});
  EXPECT_LT(max_abs_diff(out, ref.out), 2e-5);
  EXPECT_LT(max_abs_diff(lse, ref.lse), 2e-5);
  for (AttnBackwardMode mode : {AttnBackwardMode::kKvOuter, AttnBackwardMode::kTwoPass, AttnBackwardMode::kAuto}) {
    std::vector<float> dq(nq, 7.0f), dk(nk, 7.0f), dv(nk, 7.0f);  // overwritten, not accumulated
    attention_backward(dq.data(), dk.data(), dv.data(), dout.data(), q.data(), k.data(), v.data(), out.data(),
                       lse.data(), s, {c.bq, c.bk}, mode);
    EXPECT_LT(max_abs_diff(dq, ref.dq), 5e-5) << "mode " << static_cast<int>(mode);
    EXPECT_LT(max_abs_diff(dk, ref.dk), 5e-5) << "mode " << static_cast<int>(mode);
    EXPECT_LT(max_abs_diff(dv, ref.dv), 5e-5) << "mode " << static_cast<int>(mode);
  }
}

INSTANTIATE_TEST_SUITE_P(Shapes, ModelAttentionTiles,
                         ::testing::Values(AttnCase{1, 1, 2, 2, 8, 64, 64},    // one token
                                           AttnCase{2, 70, 4, 4, 8, 64, 64},   // partial last tile
                                           AttnCase{2, 70, 4, 2, 8, 16, 16},   // GQA, many tiles
                                           AttnCase{1, 53, 6, 2, 12, 16, 8},   // bq > bk
                                           AttnCase{1, 53, 4, 1, 6, 5, 16},    // bq < bk, MQA
                                           AttnCase{3, 33, 2, 1, 16, 32, 32},  // T one past a tile
                                           AttnCase{1, 128, 4, 4, 8, 128, 128}),  // one tile
                         [](const ::testing::TestParamInfo<AttnCase>& i) { return case_name(i.param); });

// ---------------------------------------------------------------------------------------------------
// Model helpers.

nlohmann::json tiny_config_json(const std::string& router = "moepp") {
  nlohmann::json j = {{"vocab_size", 31},         {"hidden_size", 16},         {"intermediate_size", 24},
                      {"num_hidden_layers", 2},   {"num_attention_heads", 4},  {"num_key_value_heads", 2},
                      {"max_position_embeddings", 64}, {"num_experts", {8}},   {"moe_router", router}};
  if (router == "topk") j["num_experts"] = {4};
  return j;
}

ModelConfig tiny_config(const std::string& router = "moepp") {
  return ModelConfig::from_json(tiny_config_json(router), "tiny");
}

ModelParams tiny_params(const ModelConfig& c, uint64_t seed) {
  ModelParams p = ModelParams::zeros(c);
  p.init_random(c, seed, 0.2f);
  return p;
}

template <class F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "(no error)";
}

// ---------------------------------------------------------------------------------------------------
// Model.

TEST(Model, ConfigJsonRoundTrip) {
  nlohmann::json j = tiny_config_json();
  j["moe_capacity_factor"] = 1.1;
  j["moe_tau"] = 0.5;
  j["n_constant_experts"] = 1;
  j["rms_norm_eps"] = 1e-5;
  const ModelConfig c = ModelConfig::from_json(j, "c.json");
  EXPECT_EQ(c.head_dim, 4);
  EXPECT_EQ(c.n_kv_heads, 2);
  const nlohmann::json out = c.to_json();
  EXPECT_EQ(out["model_type"], "MoE++");
  EXPECT_EQ(out["architectures"][0], "MoeForCausalLM");
  EXPECT_EQ(out["rms_norm_eps"].get<double>(), 1e-5);
  const ModelConfig c2 = ModelConfig::from_json(out, "out.json");
  EXPECT_EQ(c2.to_json(), out);
  EXPECT_EQ(*c2.moe.capacity_factor, 1.1);
  EXPECT_EQ(c2.moe.n_constant, 1);
  EXPECT_EQ(c2.moe.tau, 0.5);
  EXPECT_EQ(c2.layer_moe(1, true).layer_index, 1);
  EXPECT_TRUE(c2.layer_moe(1, true).training);
}

TEST(Model, ConfigErrorsNameTheField) {
  auto err = [](nlohmann::json j) { return error_of([&] { ModelConfig::from_json(j, "cfg.json"); }); };
  nlohmann::json j = tiny_config_json();
  j.erase("vocab_size");
  EXPECT_NE(err(j).find("cfg.json: field 'vocab_size' is required"), std::string::npos) << err(j);
  // One field set to a value the engine refuses (or a misspelt key); the error must name it.
  const std::vector<std::pair<std::string, nlohmann::json>> refused = {
      {"tie_word_embeddings", true},
      {"num_attention_heads", 3},
      {"num_key_value_heads", 3},
      {"hidden_act", "gelu"},
      {"moe_tua", 0.5},
      {"head_dim", 8},
      {"rope_scaling", nlohmann::json::object({{"type", "linear"}})},
  };
  for (const auto& [field, value] : refused) {
    j = tiny_config_json();
    j[field] = value;
    EXPECT_NE(err(j).find("'" + field + "'"), std::string::npos) << field << ": " << err(j);
  }
}

TEST(Model, RejectsTokensOutsideTheVocabulary) {
  const ModelConfig c = tiny_config();
  const Model m(c);
  const ModelParams p = tiny_params(c, 1);
  ModelState st;
  std::vector<int32_t> tok = {1, 2, 31, 4};
  const std::string e = error_of([&] { m.forward(st, tok.data(), nullptr, 1, 4, p, false); });
  EXPECT_NE(e.find("token id 31 at position 2"), std::string::npos) << e;
  tok[2] = 3;
  std::vector<int32_t> tg = {1, -2, 3, 4};
  const std::string e2 = error_of([&] { m.forward(st, tok.data(), tg.data(), 1, 4, p, false); });
  EXPECT_NE(e2.find("target id -2"), std::string::npos) << e2;
  std::vector<int32_t> long_seq(65, 1);
  const std::string e3 = error_of([&] { m.forward(st, long_seq.data(), nullptr, 1, 65, p, false); });
  EXPECT_NE(e3.find("max_position_embeddings"), std::string::npos) << e3;
}

// Inference is per sequence: a batch of two gives each sequence's logits of a batch of one.
TEST(Model, BatchRowsAreIndependentInInference) {
  const ModelConfig c = tiny_config();
  const Model m(c);
  const ModelParams p = tiny_params(c, 2);
  const int64_t T = 37;
  const auto tok = random_tokens(2 * T, c.vocab, 3);
  ModelState both, one;
  both.keep_logits = one.keep_logits = true;
  m.forward(both, tok.data(), nullptr, 2, T, p, false);
  for (int64_t b = 0; b < 2; ++b) {
    m.forward(one, tok.data() + b * T, nullptr, 1, T, p, false);
    double worst = 0;
    for (int64_t i = 0; i < T * c.vocab; ++i)
      worst = std::max(worst, static_cast<double>(std::abs(one.logits.data[i] - both.logits.data[b * T * c.vocab + i])));
    EXPECT_LT(worst, 1e-5) << "sequence " << b;
  }
}

// The head's gradient taken during a training forward equals the one backward recomputes (aux loss
// off, no capacity, so training and inference passes compute the same function).
TEST(Model, FusedHeadBackwardEqualsRecomputed) {
  nlohmann::json j = tiny_config_json();
  j["moe_aux_loss_coef"] = 0.0;
  j["vocab_size"] = 1000;  // several head chunks? (chunk >= 16 rows; N = 40 rows)
  const ModelConfig c = ModelConfig::from_json(j, "c");
  const Model m(c);
  const ModelParams p = tiny_params(c, 4);
  const int64_t B = 2, T = 20;
  auto tok = random_tokens(B * T, c.vocab, 5), tg = random_tokens(B * T, c.vocab, 6);
  tg[3] = tg[17] = -1;
  ModelParams g1 = ModelParams::zeros(c), g2 = ModelParams::zeros(c);
  ModelState s1, s2;
  const float l1 = m.forward(s1, tok.data(), tg.data(), B, T, p, true);
  EXPECT_TRUE(s1.head_grad_ready);
  m.backward(g1, s1, p);
  const float l2 = m.forward(s2, tok.data(), tg.data(), B, T, p, false);
  EXPECT_FALSE(s2.head_grad_ready);
  m.backward(g2, s2, p);
  EXPECT_NEAR(l1, l2, 1e-6);
  auto n1 = g1.named(c), n2 = g2.named(c);
  for (size_t i = 0; i < n1.size(); ++i) {
    double worst = 0, scale = 1e-6;
    for (size_t k = 0; k < n1[i].second->numel(); ++k) {
      worst = std::max(worst, static_cast<double>(std::abs(n1[i].second->data[k] - n2[i].second->data[k])));
      scale = std::max(scale, static_cast<double>(std::abs(n2[i].second->data[k])));
    }
    EXPECT_LT(worst, 1e-5 * scale) << n1[i].first;
  }
}

// A few SGD steps on one short repeated sequence lower the training loss (CE + aux).
TEST(Model, SgdStepsLowerTheLoss) {
  for (const std::string router : {"moepp", "topk"}) {
    const ModelConfig c = tiny_config(router);
    const Model m(c);
    ModelParams p = tiny_params(c, 7);
    ModelParams g = ModelParams::zeros(c);
    const int64_t B = 2, T = 24;
    std::vector<int32_t> tok(B * T), tg(B * T);
    for (int64_t i = 0; i < B * T; ++i) {
      tok[i] = static_cast<int32_t>((i % T) % 6 + 3);  // 3 4 5 6 7 8 3 4 ...
      tg[i] = static_cast<int32_t>(((i % T) + 1) % 6 + 3);
    }
    ModelState st;
    float first = 0, last = 0;
    for (int step = 0; step < 12; ++step) {
      const float loss = m.forward(st, tok.data(), tg.data(), B, T, p, true) + st.aux_loss_sum;
      ASSERT_TRUE(std::isfinite(loss));
      if (step == 0) first = loss;
      last = loss;
      g.zero();
      m.backward(g, st, p);
      auto pn = p.named(c);
      auto gn = g.named(c);
      for (size_t i = 0; i < pn.size(); ++i)
        for (size_t k = 0; k < pn[i].second->numel(); ++k) pn[i].second->data[k] -= 0.5f * gn[i].second->data[k];
    }
    EXPECT_LT(last, 0.5f * first) << router << ": first " << first << ", last " << last;
    EXPECT_EQ(st.ffn_experts_per_token.size(), 2u);
    for (float f : st.ffn_experts_per_token) {
      EXPECT_GE(f, 0.0f);
      EXPECT_LE(f, 2.0f);
    }
  }
}

// ---------------------------------------------------------------------------------------------------
// Checkpoints.

TEST(ModelCheckpoint, RoundTrip) {
  ScratchDir tmp{"moepp_test_model"};
  const ModelConfig c = tiny_config();
  const ModelParams p = tiny_params(c, 11);
  save_model(tmp.dir().string(), c, p);
  EXPECT_TRUE(fs::exists(tmp.dir() / "config.json"));
  EXPECT_TRUE(fs::exists(tmp.dir() / "model.safetensors"));
  for (const auto& e : fs::directory_iterator(tmp.dir()))  // no temporary files left behind
    EXPECT_TRUE(e.path().filename() == "config.json" || e.path().filename() == "model.safetensors") << e.path();
  auto [c2, p2] = load_model(tmp.dir().string());
  EXPECT_EQ(c2.to_json(), c.to_json());
  auto a = p.named(c);
  auto b = p2.named(c2);
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) {
    EXPECT_EQ(a[i].first, b[i].first);
    EXPECT_EQ(a[i].second->shape, b[i].second->shape);
    EXPECT_EQ(a[i].second->data, b[i].second->data) << a[i].first;
  }
  const Model m(c2);
  m.check_params(p2, "loaded");
}

class ModelCheckpointFaults : public ::testing::Test {
 protected:
  ScratchDir tmp{"moepp_test_model"};
  ModelConfig c = tiny_config();
  ModelParams p = tiny_params(c, 12);
  std::string dir() const { return tmp.dir().string(); }
  std::string load_error() const { return error_of([&] { load_model(dir()); }); }
  // Rewrites model.safetensors with `edit` applied to the (name, tensor) list.
  template <class F>
  void rewrite(F&& edit) {
    std::vector<std::pair<std::string, Tensor>> ts;
    for (const auto& [n, t] : p.named(c)) ts.emplace_back(n, *t);
    edit(ts);
    io::SafetensorsWriter w;
    for (const auto& [n, t] : ts) w.add_f32(n, t);
    w.write((tmp.dir() / "model.safetensors").string());
  }
  void SetUp() override { save_model(dir(), c, p); }
};

TEST_F(ModelCheckpointFaults, MalformedConfig) {
  { std::ofstream(tmp.dir() / "config.json") << "{\"vocab_size\": 31,"; }
  const std::string e = load_error();
  EXPECT_NE(e.find("config.json: invalid JSON"), std::string::npos) << e;
  nlohmann::json j = c.to_json();
  j["num_hidden_layers"] = "two";
  { std::ofstream(tmp.dir() / "config.json") << j.dump(); }
  const std::string e2 = load_error();
  EXPECT_NE(e2.find("config.json: field 'num_hidden_layers' must be an integer"), std::string::npos) << e2;
  fs::remove(tmp.dir() / "config.json");
  const std::string e3 = load_error();
  EXPECT_NE(e3.find("config.json: cannot open"), std::string::npos) << e3;
}

TEST_F(ModelCheckpointFaults, MissingTensor) {
  rewrite([](auto& ts) {
    std::erase_if(ts, [](const auto& x) { return x.first == "model.layers.1.self_attn.k_proj.weight"; });
  });
  const std::string e = load_error();
  EXPECT_NE(e.find("model.safetensors: missing tensor 'model.layers.1.self_attn.k_proj.weight'"), std::string::npos)
      << e;
}

TEST_F(ModelCheckpointFaults, MisshapedTensor) {
  rewrite([](auto& ts) {
    for (auto& [n, t] : ts)
      if (n == "model.layers.0.mlp.moe.experts.experts.2.up_proj.weight") t = Tensor({48, 15});
  });
  const std::string e = load_error();
  EXPECT_NE(e.find("tensor 'model.layers.0.mlp.moe.experts.experts.2.up_proj.weight' has shape [48, 15], expected [48, 16]"),
            std::string::npos)
      << e;
}

TEST_F(ModelCheckpointFaults, UnexpectedTensor) {
  rewrite([](auto& ts) { ts.emplace_back("model.layers.0.self_attn.rotary_emb.inv_freqs", Tensor({2})); });
  const std::string e = load_error();
  EXPECT_NE(e.find("unexpected tensor 'model.layers.0.self_attn.rotary_emb.inv_freqs'"), std::string::npos) << e;
}

TEST_F(ModelCheckpointFaults, Layer0GateMapIsOptional) {
  rewrite([](auto& ts) {
    std::erase_if(ts, [](const auto& x) { return x.first == "model.layers.0.mlp.moe.gate.gate_map.weight"; });
  });
  auto [c2, p2] = load_model(dir());
  EXPECT_EQ(p2.layers[0].moe.gate_map.shape, (std::vector<int64_t>{8, 8}));
  rewrite([](auto& ts) {
    std::erase_if(ts, [](const auto& x) { return x.first == "model.layers.1.mlp.moe.gate.gate_map.weight"; });
  });
  EXPECT_NE(load_error().find("missing tensor 'model.layers.1.mlp.moe.gate.gate_map.weight'"), std::string::npos);
}

TEST_F(ModelCheckpointFaults, TruncatedAndCorruptShards) {
  const fs::path f = tmp.dir() / "model.safetensors";
  const auto size = fs::file_size(f);
  fs::resize_file(f, size - 10);
  const std::string e = load_error();
  EXPECT_NE(e.find("model.safetensors"), std::string::npos) << e;
  EXPECT_EQ(e.find("(no error)"), std::string::npos);
  { std::ofstream(f, std::ios::binary) << "garbage!garbage!"; }
  const std::string e2 = load_error();
  EXPECT_NE(e2.find("model.safetensors"), std::string::npos) << e2;
  EXPECT_EQ(e2.find("(no error)"), std::string::npos);
  // Sharded: a corrupt second shard.
  fs::remove(f);
  std::vector<std::pair<std::string, Tensor>> ts;
  for (const auto& [n, t] : p.named(c)) ts.emplace_back(n, *t);
  io::write_sharded(dir(), ts, 4096);
  auto loaded = load_model(dir());  // intact shards load
  EXPECT_EQ(loaded.second.lm_head.data, p.lm_head.data);
  fs::path victim;
  for (const auto& e3 : fs::directory_iterator(tmp.dir()))
    if (e3.path().filename().string().rfind("model-00002-of-", 0) == 0) victim = e3.path();
  ASSERT_FALSE(victim.empty());
  fs::resize_file(victim, fs::file_size(victim) / 2);
  const std::string e4 = load_error();
  EXPECT_NE(e4.find(victim.filename().string()), std::string::npos) << e4;
}

}  // namespace
}  // namespace moepp
