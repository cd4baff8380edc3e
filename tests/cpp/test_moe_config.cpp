// Unit tests of MoeConfig (src/moe/moe_config): bad values are errors naming the field, the expert
// layout of a parsed config, missing router keys take the released config class's defaults, and the
// rule for scaling the expert input by K.
#include <gtest/gtest.h>

#include <string>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "moe/balance_loss.h"
#include "moe/moe_config.h"
#include "test_util.h"
#include "tiny_models.h"

namespace moepp {
namespace {

using test::small_moe_config;

// Absurd dimensions are refused by the config, before any buffer is sized from them (docs/limits.md);
// the released 7B layer (D 1536, I 4096, 20 experts) is admitted.
TEST(MoeConfig, DimensionLimits) {
  auto error = [](const std::string& extra) {
    return test::error_message([&] {
      MoeConfig::from_json(nlohmann::json::parse(R"({"hidden_size": 1536, "intermediate_size": 4096, "num_experts": [20])" +
                                                 extra + "}"),
                           "C.json");
    });
  };
  EXPECT_EQ(error(""), "(no error)");
  EXPECT_NE(error(R"(, "hidden_size": 1099511627776)").find("C.json: field 'hidden_size' must be in [1, 65536]"),
            std::string::npos);
  EXPECT_NE(error(R"(, "intermediate_size": 4611686018427387904)").find("field 'intermediate_size' must be in [1, 262144]"),
            std::string::npos);
  EXPECT_NE(error(R"(, "num_experts": 100000)").find("field 'num_experts' must be in [1, 1024]"), std::string::npos);
  // Counts whose sum would overflow are refused one by one.
  EXPECT_NE(error(R"(, "n_zero_experts": 9223372036854775807, "n_copy_experts": 9223372036854775807)")
                .find("field 'n_zero_experts' must be <= 1024"),
            std::string::npos);
  // Each dimension within its limit, their product (3 D I x 1020 FFN experts) is not.
  const std::string m = error(R"(, "hidden_size": 65536, "intermediate_size": 262144, "num_experts": 1024)");
  EXPECT_NE(m.find("C.json: field 'intermediate_size' x hidden_size x FFN experts gives 52570399703040 expert "
                   "weights per layer, above the limit 4294967296"),
            std::string::npos)
      << m;
}

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

// ReMoE's adaptive lambda aims at 1 - K/E by default and at 1 - target/E with moe_relu_target_experts
// (fractional allowed), which only the relu router takes and which must lie in (0, E); the key
// survives a round trip through the model config.
TEST(MoeConfig, ReluTargetExpertsSetsTheAdaptiveL1Target) {
  auto parse = [](const std::string& extra) {
    return MoeConfig::from_json(nlohmann::json::parse(R"({"hidden_size": 8, "intermediate_size": 8, "num_experts": [8],
        "moe_router": "relu", "moe_top_k": 2)" + extra + "}"),
                                "C.json");
  };
  EXPECT_DOUBLE_EQ(parse("").relu_target_sparsity(), 1.0 - 2.0 / 8.0);
  const MoeConfig c = parse(R"(, "moe_relu_target_experts": 1.34)");
  EXPECT_DOUBLE_EQ(c.relu_target_sparsity(), 1.0 - 1.34 / 8.0);
  // Below the target sparsity lambda grows, above it shrinks.
  EXPECT_FLOAT_EQ(relu_l1_coef_update(1.0f, 0.80f, c), 1.2f);  // 0.80 < 0.8325
  EXPECT_FLOAT_EQ(relu_l1_coef_update(1.0f, 0.85f, c), 1.0f / 1.2f);
  EXPECT_FLOAT_EQ(relu_l1_coef_update(1.0f, 0.80f, parse("")), 1.0f / 1.2f);  // 0.80 > 0.75
  for (const char* bad : {R"(, "moe_relu_target_experts": 0)", R"(, "moe_relu_target_experts": 8)",
                          R"(, "moe_relu_target_experts": -1.5)"})
    EXPECT_NE(test::error_message([&] { parse(bad); }).find("C.json: field 'moe_relu_target_experts' must be in (0, num_experts = 8)"),
              std::string::npos)
        << bad;
  EXPECT_NE(test::error_message([&] {
              MoeConfig::from_json(nlohmann::json::parse(R"({"hidden_size": 8, "intermediate_size": 8, "num_experts": [8],
                  "moe_router": "topk", "moe_relu_target_experts": 1.5})"),
                                   "C.json");
            }).find("field 'moe_relu_target_experts' applies to the relu router only"),
            std::string::npos);
}

}  // namespace
}  // namespace moepp
