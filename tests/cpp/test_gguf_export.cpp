// Tests for model/gguf_export: the Q/K row permutation (against the rotation it must undo: adjacent-pair
// RoPE on permuted rows = rotate_half RoPE on the original rows, via model/rope.h), the refusal of every
// non-vanilla config naming its key, and the synthetic vocabulary. The whole file format is checked by
// tests/python/test_gguf_export.py.
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <set>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "model/gguf_export.h"
#include "model/model_config.h"
#include "model/rope.h"

using moepp::Error;
using moepp::ModelConfig;

namespace {

nlohmann::json vanilla_json() {
  return {{"vocab_size", 400}, {"hidden_size", 32}, {"intermediate_size", 48}, {"num_hidden_layers", 2},
          {"num_attention_heads", 4}, {"num_key_value_heads", 2}, {"num_experts", {4}}, {"moe_top_k", 2},
          {"moe_router", "topk"}, {"moe_2layer_gate", false}, {"moe_use_logits_norm", false},
          {"moe_use_mixtral_gating", true}};
}

}  // namespace

TEST(PermuteRopeRows, AdjacentPairRopeOfPermutedRowsEqualsRotateHalf) {
  const int64_t H = 2, hd = 8, cols = 3, T = 5;
  std::mt19937 rng(3);
  std::normal_distribution<float> nd;
  std::vector<float> w(H * hd * cols), x(T * cols);
  for (float& v : w) v = nd(rng);
  for (float& v : x) v = nd(rng);
  std::vector<float> wp(w.size());
  moepp::permute_rope_rows(wp.data(), w.data(), H, hd, cols);
  moepp::RopeTable rt;
  rt.build(T, hd, 10000.0f);
  // q = x W^T for both weight orders.
  auto project = [&](const std::vector<float>& m) {
    std::vector<float> q(T * H * hd, 0.0f);
    for (int64_t t = 0; t < T; ++t)
      for (int64_t r = 0; r < H * hd; ++r)
        for (int64_t c = 0; c < cols; ++c) q[t * H * hd + r] += x[t * cols + c] * m[r * cols + c];
    return q;
  };
  std::vector<float> q = project(w), qp = project(wp);
  moepp::rope_forward(q.data(), rt, 1, T, H, hd);  // rotate_half
  for (int64_t t = 0; t < T; ++t)                   // adjacent pairs (2i, 2i+1), angle of frequency i
    for (int64_t h = 0; h < H; ++h)
      for (int64_t i = 0; i < hd / 2; ++i) {
        float* v = qp.data() + t * H * hd + h * hd + 2 * i;
        const float c = rt.cos[t * (hd / 2) + i], s = rt.sin[t * (hd / 2) + i], a = v[0], b = v[1];
        v[0] = a * c - b * s;
        v[1] = b * c + a * s;
      }
  // The same vectors, in the permuted order: qp[2i + p] = q[p * hd/2 + i].
  for (int64_t t = 0; t < T; ++t)
    for (int64_t h = 0; h < H; ++h)
      for (int64_t i = 0; i < hd / 2; ++i)
        for (int64_t p = 0; p < 2; ++p)
          EXPECT_NEAR(qp[t * H * hd + h * hd + 2 * i + p], q[t * H * hd + h * hd + p * hd / 2 + i], 1e-5f);
}

TEST(CheckLlamaGgufCompatible, AcceptsVanillaAndNamesTheKeyOfEveryOtherModel) {
  EXPECT_NO_THROW(moepp::check_llama_gguf_compatible(ModelConfig::from_json(vanilla_json(), "c"), "c"));
  nlohmann::json nomul = vanilla_json();
  nomul["moe_use_mixtral_gating"] = false;
  nomul["moe_feature_no_mul_topk"] = true;
  EXPECT_NO_THROW(moepp::check_llama_gguf_compatible(ModelConfig::from_json(nomul, "c"), "c"));
  const std::vector<std::pair<nlohmann::json, std::string>> cases = {
      {{{"moe_router", "moepp"}, {"num_experts", {8}}}, "n_zero_experts"},
      {{{"moe_router", "moepp"}, {"num_experts", {8}}, {"n_zero_experts", 0}, {"n_copy_experts", 2}}, "n_copy_experts"},
      {{{"moe_router", "moepp"}, {"n_zero_experts", 0}, {"n_copy_experts", 0}, {"n_constant_experts", 0}}, "moe_router"},
      {{{"moe_2layer_gate", true}}, "moe_2layer_gate"},
      {{{"moe_use_logits_norm", true}}, "moe_use_logits_norm"},
      {{{"moe_gating_residual", true}}, "moe_gating_residual"},
      {{{"moe_use_mixtral_gating", false}}, "moe_use_mixtral_gating"},
  };
  for (const auto& [patch, key] : cases) {
    nlohmann::json j = vanilla_json();
    j.update(patch);
    const ModelConfig cfg = ModelConfig::from_json(j, "cfg.json");
    try {
      moepp::check_llama_gguf_compatible(cfg, "cfg.json");
      ADD_FAILURE() << key << " was accepted";
    } catch (const Error& e) {
      const std::string m = e.what();
      EXPECT_EQ(m.rfind("cfg.json: " + key, 0), 0u) << m;
      EXPECT_NE(m.find("llama"), std::string::npos) << m;
    }
  }
}

TEST(SyntheticGgufVocab, SpecialsBytesAndDistinctPieces) {
  const ModelConfig cfg = ModelConfig::from_json(vanilla_json(), "c");
  const moepp::GgufVocab v = moepp::synthetic_gguf_vocab(cfg);
  ASSERT_EQ(v.tokens.size(), 400u);
  EXPECT_EQ(std::set<std::string>(v.tokens.begin(), v.tokens.end()).size(), 400u);
  EXPECT_EQ(v.tokens[static_cast<size_t>(cfg.bos)], "<s>");
  EXPECT_EQ(v.tokens[static_cast<size_t>(cfg.eos)], "</s>");
  EXPECT_EQ(v.types[static_cast<size_t>(cfg.bos)], moepp::GgufVocab::kControl);
  ASSERT_GE(v.unk, 0);
  EXPECT_EQ(v.tokens[static_cast<size_t>(v.unk)], "<unk>");
  int bytes = 0;
  for (size_t i = 0; i < v.tokens.size(); ++i)
    if (v.types[i] == moepp::GgufVocab::kByte) {
      char want[8];
      std::snprintf(want, sizeof want, "<0x%02X>", bytes++);
      EXPECT_EQ(v.tokens[i], want);
    }
  EXPECT_EQ(bytes, 256);
  nlohmann::json small = vanilla_json();
  small["vocab_size"] = 200;
  EXPECT_THROW(moepp::synthetic_gguf_vocab(ModelConfig::from_json(small, "c")), Error);
}
