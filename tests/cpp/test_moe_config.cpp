// Unit tests of MoeConfig (src/moe/moe_config): bad values are errors naming the field, the expert
// layout of a parsed config, missing router keys take the released config class's defaults, and the
// rule for scaling the expert input by K.
#include <gtest/gtest.h>

#include <string>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "moe/moe_config.h"
#include "tiny_models.h"

namespace moepp {
namespace {

using test::small_moe_config;

TEST(MoeConfig, BadValuesNameTheField) {
  auto expect_error = [](const char* text, const std::string& needle) {
    try {
      MoeConfig::from_json(nlohmann::json::parse(text), "C.json");
      ADD_FAILURE() << "no error for " << text;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  };
  expect_error(R"({"intermediate_size": 8, "num_experts": [8]})", "hidden_size");
  expect_error(R"({"hidden_size": 8, "intermediate_size": 8, "num_experts": [8], "moe_top_k": "2"})", "moe_top_k");
  expect_error(R"({"hidden_size": 8, "intermediate_size": 8, "num_experts": [8], "moe_topk": 2})", "moe_topk");
  expect_error(R"({"hidden_size": 8, "intermediate_size": 8, "num_experts": [4]})", "num_experts");
  expect_error(R"({"hidden_size": 8, "intermediate_size": 8, "num_experts": [8], "moe_top_k": 9})", "moe_top_k");
  expect_error(R"({"hidden_size": 8, "intermediate_size": 8, "num_experts": [8], "moe_router": "x"})", "moe_router");
  expect_error(R"({"hidden_size": 8, "intermediate_size": 8, "num_experts": [8], "moe_tau": 0})", "moe_tau");
  expect_error(R"({"hidden_size": 8, "intermediate_size": 8, "num_experts": [8], "moe_router": "relu", "moe_capacity_factor": 1.0})", "moe_capacity_factor");
  const MoeConfig c = MoeConfig::from_json(nlohmann::json::parse(R"({"hidden_size": 8, "intermediate_size": 16, "num_experts": [20]})"), "C.json");
  EXPECT_EQ(c.n_ffn(), 16);
  EXPECT_EQ(c.first_zero(), 19);
  EXPECT_EQ(c.kind(16), ExpertKind::kConstant);
  EXPECT_EQ(c.kind(18), ExpertKind::kCopy);
  EXPECT_TRUE(c.gating_residual);
}

TEST(MoeConfig, MissingRouterKeysTakeTheReleasedConfigDefaults) {
  // configuration_moe_plus_plus.py: moe_2layer_gate=True, moe_use_logits_norm=False,
  // moe_gate_norm_std=1.0, moe_use_mixtral_gating=False, moe_feature_no_mul_topk=False.
  const MoeConfig c = MoeConfig::from_json(
      nlohmann::json::parse(R"({"hidden_size": 8, "intermediate_size": 16, "num_experts": [12]})"), "C.json");
  EXPECT_TRUE(c.two_layer_gate);
  EXPECT_FALSE(c.logits_norm);
  EXPECT_EQ(c.gate_norm_std, 1.0f);
  EXPECT_FALSE(c.mixtral_gating);
  EXPECT_FALSE(c.no_mul_topk);
  EXPECT_TRUE(c.scales_input());
  EXPECT_EQ(c.input_scale(), 2.0f);
  // moepp's extension keys keep moepp's defaults.
  EXPECT_EQ(c.top_k, 2);
  EXPECT_EQ(c.router, RouterKind::kMoepp);
  EXPECT_TRUE(c.gating_residual);
  EXPECT_EQ(c.tau, 0.75);
  EXPECT_FALSE(c.capacity_factor.has_value());
}

TEST(MoeConfig, InputIsScaledByKOnlyWithoutMixtralGatingAndWithoutNoMulTopk) {
  MoeConfig c = small_moe_config(RouterKind::kMoepp);
  c.top_k = 3;
  for (bool mixtral : {false, true})
    for (bool no_mul : {false, true}) {
      c.mixtral_gating = mixtral;
      c.no_mul_topk = no_mul;
      EXPECT_EQ(c.scales_input(), !mixtral && !no_mul) << mixtral << no_mul;
      EXPECT_EQ(c.input_scale(), !mixtral && !no_mul ? 3.0f : 1.0f) << mixtral << no_mul;
    }
}

}  // namespace
}  // namespace moepp
