// Unit tests of the KV-cache decoder (src/infer/decoder) against the training model's full forward:
// prefill, token-by-token decoding and mixed batches all give the same logits and router logits (the
// gating residual is per pass), quantised weights compute with their rounded values, the decoder's
// input checks leave the cache untouched, and each row's FFN experts per layer are the router's.
#include <gtest/gtest.h>

#include <cmath>
#include <nlohmann/json.hpp>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "core/error.h"
#include "core/gemm.h"
#include "infer/decoder.h"
#include "tiny_models.h"
#include "infer/kv_cache.h"
#include "infer/infer_weights.h"
#include "infer/weight_matrix.h"
#include "model/model.h"
#include "model/model_state.h"
#include "moe/router.h"
#include "test_util.h"

namespace moepp {
namespace {

using namespace test;

// ---------------------------------------------------------------------------------------------------
// Decoder vs the training model's forward

// `variant` is a router name, optionally with router flags: "+mixtral" (mixtral gating with
// moe_feature_no_mul_topk false: the released rule does not scale the input then), "+7b" (the 7B
// checkpoint's flags). Without flags the released config class's defaults apply (two-layer gate,
// no logits norm, input scaled by K).
nlohmann::json config_json(const std::string& variant) {
  const std::string router = variant.substr(0, variant.find('+'));
  nlohmann::json j = {{"vocab_size", 53},      {"hidden_size", 32},         {"intermediate_size", 24},
                      {"num_hidden_layers", 3}, {"num_attention_heads", 4}, {"num_key_value_heads", 2},
                      {"max_position_embeddings", 96}, {"num_experts", {8}}, {"moe_router", router}};
  if (variant.ends_with("+mixtral")) {
    j["moe_use_mixtral_gating"] = true;
    j["moe_feature_no_mul_topk"] = false;
  }
  if (variant.ends_with("+7b")) {
    j["moe_2layer_gate"] = false;
    j["moe_use_logits_norm"] = true;
    j["moe_feature_no_mul_topk"] = true;
  }
  if (router == "moepp") {
    j["n_zero_experts"] = 1;
    j["n_copy_experts"] = 1;
    j["n_constant_experts"] = 2;
  }
  if (router == "topk") j["num_experts"] = {4};
  return j;
}

struct Fixture {
  ModelConfig cfg;
  ModelParams params;
};

Fixture make_model(const std::string& router, uint64_t seed) {
  Fixture f{ModelConfig::from_json(config_json(router), "test"), {}};
  f.params = ModelParams::zeros(f.cfg);
  // Larger router weights than the default init so that routing varies between tokens.
  f.params.init_random(f.cfg, seed, 0.2f);
  return f;
}

float max_rel_diff(const float* a, const float* b, size_t n) {
  float mx = 1.0f, d = 0.0f;
  for (size_t i = 0; i < n; ++i) {
    mx = std::max(mx, std::fabs(b[i]));
    d = std::max(d, std::fabs(a[i] - b[i]));
  }
  return d / mx;
}

class DecoderParity : public ::testing::TestWithParam<std::string> {};

TEST_P(DecoderParity, PrefillAndDecodeEqualFullRecompute) {
  const Fixture f = make_model(GetParam(), 3);
  const int64_t T = 70, V = f.cfg.vocab, E = f.cfg.moe.n_experts;
  const std::vector<int32_t> tok = random_tokens(T, V, 11);
  // Reference: the training model's forward over the whole sequence.
  const Model model(f.cfg);
  ModelState ms;
  ms.keep_logits = true;
  model.forward(ms, tok.data(), nullptr, 1, T, f.params, false);

  const Decoder dec(f.cfg, InferWeights::from_params(f.cfg, f.params, WeightDType::kF32));
  KvCache cache = dec.make_cache(2, 96);
  DecoderScratch sc;
  // Slot 0: one prefill of all T tokens. Slot 1: a prefill of 5, then one token at a time.
  Tensor logits;
  std::vector<Tensor> rl;
  dec.forward(logits, cache, {{0, tok.data(), T, true}}, sc, &rl);
  ASSERT_EQ(logits.shape, (std::vector<int64_t>{T, V}));
  EXPECT_LT(max_rel_diff(logits.ptr(), ms.logits.ptr(), T * V), 1e-4f);
  for (int64_t l = 0; l < f.cfg.n_layers; ++l)
    EXPECT_LT(max_rel_diff(rl[l].ptr(), ms.layers[l].z.ptr(), T * E), 1e-4f) << "layer " << l;

  std::vector<float> step_logits;
  dec.forward(logits, cache, {{1, tok.data(), 5, true}}, sc);
  step_logits.assign(logits.data.begin(), logits.data.end());
  for (int64_t t = 5; t < T; ++t) {
    dec.forward(logits, cache, {{1, tok.data() + t, 1, false}}, sc, &rl);
    ASSERT_EQ(logits.shape, (std::vector<int64_t>{1, V}));
    step_logits.insert(step_logits.end(), logits.data.begin(), logits.data.end());
    for (int64_t l = 0; l < f.cfg.n_layers; ++l)
      ASSERT_LT(max_rel_diff(rl[l].ptr(), ms.layers[l].z.ptr() + t * E, E), 1e-4f) << "t " << t << " layer " << l;
  }
  EXPECT_EQ(cache.length(0), T);
  EXPECT_EQ(cache.length(1), T);
  EXPECT_LT(max_rel_diff(step_logits.data(), ms.logits.ptr(), T * V), 1e-4f);
  // Greedy choices agree everywhere.
  for (int64_t t = 0; t < T; ++t) {
    const float* a = step_logits.data() + t * V;
    const float* b = ms.logits.ptr() + t * V;
    EXPECT_EQ(std::max_element(a, a + V) - a, std::max_element(b, b + V) - b) << "t " << t;
  }
}

INSTANTIATE_TEST_SUITE_P(Routers, DecoderParity,
                         ::testing::Values("moepp", "topk", "moepp+mixtral", "topk+mixtral", "moepp+7b"),
                         [](const ::testing::TestParamInfo<std::string>& i) {
                           std::string n = i.param;
                           for (char& ch : n)
                             if (ch == '+') ch = '_';
                           return n;
                         });

TEST(Decoder, MixedBatchEqualsSeparateRuns) {
  const Fixture f = make_model("moepp", 5);
  const int64_t V = f.cfg.vocab;
  const Decoder dec(f.cfg, InferWeights::from_params(f.cfg, f.params, WeightDType::kF32));
  const std::vector<int32_t> a = random_tokens(40, V, 1), b = random_tokens(9, V, 2), c = random_tokens(1, V, 3);
  // Separately.
  DecoderScratch sc;
  std::vector<Tensor> alone(3);
  {
    KvCache kc = dec.make_cache(1, 64);
    dec.forward(alone[0], kc, {{0, a.data(), 40, false}}, sc);
    kc.clear(0);
    dec.forward(alone[1], kc, {{0, b.data(), 9, true}}, sc);
    kc.clear(0);
    dec.forward(alone[2], kc, {{0, c.data(), 1, false}}, sc);
  }
  KvCache kc = dec.make_cache(3, 64);
  Tensor mixed;
  dec.forward(mixed, kc, {{2, a.data(), 40, false}, {0, b.data(), 9, true}, {1, c.data(), 1, false}}, sc);
  ASSERT_EQ(mixed.shape, (std::vector<int64_t>{1 + 9 + 1, V}));
  EXPECT_LT(max_rel_diff(mixed.ptr(), alone[0].ptr(), V), 1e-5f);
  EXPECT_LT(max_rel_diff(mixed.ptr() + V, alone[1].ptr(), 9 * V), 1e-5f);
  EXPECT_LT(max_rel_diff(mixed.ptr() + 10 * V, alone[2].ptr(), V), 1e-5f);
}

// The weights that the decoder holds as WeightMatrix, rounded through dtype d and back to fp32.
ModelParams round_trip(const ModelConfig& cfg, ModelParams p, WeightDType d) {
  for (auto& [name, t] : p.named(cfg)) {
    const bool matrix = name.find("self_attn.") != std::string::npos || name.find("_proj.weight") != std::string::npos ||
                        name == "lm_head.weight";
    if (!matrix) continue;
    const WeightMatrix m = WeightMatrix::from_f32(t->ptr(), t->dim(0), t->dim(1), d);
    for (int64_t r = 0; r < t->dim(0); ++r) m.row_f32(r, t->ptr() + r * t->dim(1));
  }
  return p;
}

TEST(Decoder, QuantisedWeightsComputeWithTheirRoundedValues) {
  const Fixture f = make_model("moepp", 9);
  const int64_t T = 24, V = f.cfg.vocab;
  const std::vector<int32_t> tok = random_tokens(T, V, 4);
  DecoderScratch sc;
  const size_t f32_bytes = InferWeights::from_params(f.cfg, f.params, WeightDType::kF32).bytes();
  for (WeightDType dt : {WeightDType::kBF16, WeightDType::kInt8}) {
    // Reference: fp32 weights equal to the rounded ones, so routing decisions are the same.
    Tensor ref, out;
    {
      const ModelParams rounded = round_trip(f.cfg, f.params, dt);
      const Decoder dec(f.cfg, InferWeights::from_params(f.cfg, rounded, WeightDType::kF32));
      KvCache kc = dec.make_cache(1, T);
      dec.forward(ref, kc, {{0, tok.data(), T, true}}, sc);
    }
    const InferWeights w = InferWeights::from_params(f.cfg, f.params, dt);
    EXPECT_LT(w.bytes(), f32_bytes) << weight_dtype_name(dt);
    const Decoder dec(f.cfg, w, nullptr, KvDType::kF32);  // the weights alone (the bf16 cache: below)
    KvCache kc = dec.make_cache(1, T);
    dec.forward(out, kc, {{0, tok.data(), T, true}}, sc);
    // The prompt's many rows take the bf16 GEMM where oneDNN has native AVX-512 BF16: its input rows are
    // rounded to bf16 (2^-9 relative each), which the fp32 reference does not do.
    const bool bf16_gemm = gemm_bf16_native();
    EXPECT_LT(max_rel_diff(out.ptr(), ref.ptr(), T * V), bf16_gemm ? 2e-2f : 1e-4f) << weight_dtype_name(dt);
    // Decoding token by token with the quantised weights (the streaming kernels) agrees as well.
    kc.clear(0);
    for (int64_t t = 0; t < T; ++t) {
      dec.forward(out, kc, {{0, tok.data() + t, 1, false}}, sc);
      ASSERT_LT(max_rel_diff(out.ptr(), ref.ptr() + t * V, V), 1e-4f) << weight_dtype_name(dt) << " t " << t;
    }
  }
}

// A BF16 KV cache (the default with reduced-precision weights) stores the keys and values rounded to
// bf16: prefill and token-by-token decoding read the same rounded values and agree, the logits stay
// close to the F32 cache's (and differ from them: the rounding happens), and a cache of the other
// dtype is refused.
TEST(Decoder, Bf16KvCacheRoundsKeysAndValuesAndStaysCloseToF32) {
  const Fixture f = make_model("moepp", 5);
  const int64_t T = 40, V = f.cfg.vocab;
  EXPECT_EQ(Decoder(f.cfg, InferWeights::from_params(f.cfg, f.params, WeightDType::kF32)).kv_dtype(), KvDType::kF32);
  for (WeightDType dt : {WeightDType::kBF16, WeightDType::kInt8, WeightDType::kQ4})
    EXPECT_EQ(Decoder(f.cfg, InferWeights::from_params(f.cfg, f.params, dt)).kv_dtype(), KvDType::kBF16)
        << weight_dtype_name(dt);
  const std::vector<int32_t> tok = random_tokens(T, V, 8);
  const InferWeights w = InferWeights::from_params(f.cfg, f.params, WeightDType::kF32);
  const Decoder exact(f.cfg, w, nullptr, KvDType::kF32), half(f.cfg, w, nullptr, KvDType::kBF16);
  DecoderScratch sc;
  Tensor ref, pre, step;
  KvCache ce = exact.make_cache(1, T), ch = half.make_cache(1, T);
  EXPECT_EQ(ch.dtype(), KvDType::kBF16);
  EXPECT_EQ(ch.bytes() * 2, ce.bytes());
  exact.forward(ref, ce, {{0, tok.data(), T, true}}, sc);
  half.forward(pre, ch, {{0, tok.data(), T, true}}, sc);
  const float d = max_rel_diff(pre.ptr(), ref.ptr(), T * V);
  EXPECT_GT(d, 0.0f);
  EXPECT_LT(d, 1e-2f);
  ch.clear(0);
  for (int64_t t = 0; t < T; ++t) {
    half.forward(step, ch, {{0, tok.data() + t, 1, false}}, sc);
    ASSERT_LT(max_rel_diff(step.ptr(), pre.ptr() + t * V, V), 1e-4f) << "t " << t;
  }
  KvCache other = exact.make_cache(1, T);
  EXPECT_THROW(half.forward(step, other, {{0, tok.data(), 1, false}}, sc), Error);
  EXPECT_EQ(other.length(0), 0);
  EXPECT_FALSE(parse_kv_dtype_choice("auto", "--kv-dtype").has_value());
  EXPECT_EQ(parse_kv_dtype_choice("bf16", "--kv-dtype"), KvDType::kBF16);
  EXPECT_THROW(parse_kv_dtype_choice("f16", "--kv-dtype"), Error);
}

TEST(Decoder, RejectsBadInputWithoutTouchingTheCache) {
  const Fixture f = make_model("moepp", 1);
  const Decoder dec(f.cfg, InferWeights::from_params(f.cfg, f.params, WeightDType::kF32));
  KvCache kc = dec.make_cache(2, 8);
  DecoderScratch sc;
  Tensor out;
  const std::vector<int32_t> ok = {1, 2, 3}, bad = {1, 999};
  dec.forward(out, kc, {{0, ok.data(), 3, false}}, sc);
  auto msg = [&](std::vector<DecodeChunk> b) {
    try {
      dec.forward(out, kc, b, sc);
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  EXPECT_NE(msg({{1, bad.data(), 2, false}}).find("outside the vocabulary"), std::string::npos);
  EXPECT_NE(msg({{2, ok.data(), 3, false}}).find("slot 2"), std::string::npos);
  EXPECT_NE(msg({{1, ok.data(), 3, false}, {1, ok.data(), 3, false}}).find("twice"), std::string::npos);
  EXPECT_NE(msg({{0, ok.data(), 3, false}, {1, ok.data(), 0, false}}).find("no tokens"), std::string::npos);
  EXPECT_EQ(msg({{0, ok.data(), 3, false}, {1, ok.data(), 3, false}}), "no error");
  EXPECT_NE(msg({{0, ok.data(), 3, false}}).find("more than the cache"), std::string::npos);
  EXPECT_EQ(kc.length(0), 6);
  EXPECT_EQ(kc.length(1), 3);
  EXPECT_THROW(dec.make_cache(1, 97), Error);  // longer than max_position_embeddings
  EXPECT_THROW(dec.forward(out, kc, {}, sc), Error);
}

// The scratch counts the rows through MoE blocks and the FFN slots they kept; --zc-bias moves the
// count (fewer FFN slots with a positive bias, more with a negative one).
TEST(Decoder, CountsFfnSlotsWhichTheZcBiasMoves) {
  ModelConfig cfg = tiny_config("moepp");
  const ModelParams p = tiny_params(cfg, 3);
  const std::vector<int32_t> tok = random_tokens(40, cfg.vocab, 5);
  auto ffn_per_token = [&](float b) {
    ModelConfig c = cfg;
    c.set_zc_bias(b);
    const Decoder dec(c, InferWeights::from_params(c, p, WeightDType::kF32));
    KvCache cache = dec.make_cache(1, 64);
    DecoderScratch sc;
    Tensor logits;
    dec.forward(logits, cache, {{0, tok.data(), static_cast<int64_t>(tok.size()), false}}, sc);
    EXPECT_EQ(sc.moe_rows, static_cast<int64_t>(tok.size()) * c.n_layers);
    return static_cast<double>(sc.ffn_slots) / static_cast<double>(sc.moe_rows);
  };
  const double base = ffn_per_token(0.0f), fewer = ffn_per_token(2.0f), more = ffn_per_token(-2.0f);
  EXPECT_LT(fewer, base);
  EXPECT_GT(more, base);
}

// Per row and layer, the FFN experts the decoder reports are those of the router's own selection on
// the layer's logits (the slots on FFN experts that it keeps), with and without --zc-bias; they add up
// to the FFN slot counter, stay within max_ffn_experts, and the rows of the logits get their own.
TEST(Decoder, ReportsEachRowsFfnExpertsPerLayerAsTheRouterSelects) {
  for (const float bias : {0.0f, 0.7f}) {
    SCOPED_TRACE("zc_bias " + std::to_string(bias));
    ModelConfig cfg = tiny_config("moepp");
    cfg.set_zc_bias(bias);
    const ModelParams p = tiny_params(cfg, 3);
    const Decoder dec(cfg, InferWeights::from_params(cfg, p, WeightDType::kF32));
    const std::vector<int32_t> a = random_tokens(30, cfg.vocab, 5), b = random_tokens(9, cfg.vocab, 6);
    KvCache cache = dec.make_cache(2, 64);
    DecoderScratch sc;
    Tensor logits;
    std::vector<Tensor> z;
    dec.forward(logits, cache, {{0, a.data(), 30, false}, {1, b.data(), 9, true}}, sc, &z);
    const int64_t R = 39, L = cfg.n_layers;
    ASSERT_EQ(static_cast<int64_t>(sc.row_ffn.size()), R * L);
    const std::vector<int32_t> mx = dec.max_ffn_experts();
    int64_t total = 0;
    std::set<int32_t> seen;
    for (int64_t l = 0; l < L; ++l) {
      const MoeConfig mc = cfg.layer_moe(static_cast<int>(l), false);
      EXPECT_EQ(mx[l], std::min(mc.top_k, mc.n_ffn()));
      const int64_t W = mc.slot_width(), E = mc.n_experts;
      std::vector<int32_t> ids(R * W);
      std::vector<float> w(R * W), s(R * E), pr(R * E), sigma(R), norm(R);
      std::vector<uint8_t> kept(R * W);
      router_select_forward(ids.data(), w.data(), kept.data(), s.data(), pr.data(), sigma.data(), norm.data(),
                            z[l].ptr(), mc, R);
      for (int64_t t = 0; t < R; ++t) {
        int32_t n = 0;
        for (int64_t k = 0; k < W; ++k) n += kept[t * W + k] && ids[t * W + k] >= 0 && ids[t * W + k] < mc.n_ffn();
        EXPECT_EQ(sc.row_ffn[t * L + l], n) << "row " << t << " layer " << l;
        EXPECT_LE(n, mx[l]);
        total += n;
        seen.insert(n);
      }
    }
    EXPECT_EQ(total, sc.ffn_slots);
    EXPECT_GE(seen.size(), 2u) << "routing does not vary between tokens: the test would prove little";
    // Logits rows: the last row of chunk a, then every row of chunk b.
    ASSERT_EQ(static_cast<int64_t>(sc.logit_ffn.size()), 10 * L);
    for (int64_t l = 0; l < L; ++l) {
      EXPECT_EQ(sc.logit_ffn[l], sc.row_ffn[29 * L + l]);
      for (int64_t i = 0; i < 9; ++i) EXPECT_EQ(sc.logit_ffn[(1 + i) * L + l], sc.row_ffn[(30 + i) * L + l]);
    }
  }
}

// A vanilla top-k model has no zero-computation experts: every token runs K FFN experts in every layer.
TEST(Decoder, VanillaTopKRowsRunKFfnExpertsInEveryLayer) {
  const ModelConfig cfg = tiny_config("topk");
  const Decoder dec(cfg, InferWeights::from_params(cfg, tiny_params(cfg, 4), WeightDType::kF32));
  const std::vector<int32_t> tok = random_tokens(20, cfg.vocab, 7);
  KvCache cache = dec.make_cache(1, 64);
  DecoderScratch sc;
  Tensor logits;
  dec.forward(logits, cache, {{0, tok.data(), 20, true}}, sc);
  const int32_t K = static_cast<int32_t>(cfg.layer_moe(0, false).top_k);
  EXPECT_EQ(dec.max_ffn_experts(), std::vector<int32_t>(cfg.n_layers, K));
  EXPECT_EQ(sc.row_ffn, std::vector<int32_t>(20 * cfg.n_layers, K));
  EXPECT_EQ(sc.logit_ffn, sc.row_ffn);
}

}  // namespace
}  // namespace moepp
