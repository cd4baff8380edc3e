// Unit tests of ModelConfig (src/model/model_config): config.json round trips (derived head_dim and KV
// heads, the Hugging Face identity keys, the MoE++ extension keys), and every refused or missing field
// is an error naming it.
#include <gtest/gtest.h>

#include <limits>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "model/model_config.h"
#include "test_util.h"
#include "tiny_models.h"

namespace moepp {
namespace {

using namespace test;

TEST(ModelConfig, JsonRoundTrip) {
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
  // ReMoE's fractional target survives the round trip (and is absent when unset).
  EXPECT_FALSE(out.contains("moe_relu_target_experts"));
  nlohmann::json r = tiny_config_json();
  for (const char* k : {"n_zero_experts", "n_copy_experts", "n_constant_experts"}) r[k] = 0;
  r["moe_router"] = "relu";
  r["moe_gating_residual"] = false;
  r["moe_relu_target_experts"] = 1.34;
  const nlohmann::json rout = ModelConfig::from_json(r, "r.json").to_json();
  EXPECT_EQ(rout["moe_relu_target_experts"].get<double>(), 1.34);
  EXPECT_EQ(*ModelConfig::from_json(rout, "rout.json").moe.relu_target_experts, 1.34);
}

TEST(ModelConfig, ErrorsNameTheField) {
  auto err = [](nlohmann::json j) { return error_message([&] { ModelConfig::from_json(j, "cfg.json"); }); };
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

// The released 7B config.json (spec §5) is admitted; absurd dimensions, each alone or by their product,
// are refused naming the field before anything is allocated (docs/limits.md).
TEST(ModelConfig, DimensionLimits) {
  const nlohmann::json released = nlohmann::json::parse(R"({
    "architectures": ["MoeForCausalLM"], "model_type": "MoE++", "vocab_size": 65536,
    "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0, "hidden_act": "silu",
    "hidden_size": 1536, "initializer_range": 0.01, "intermediate_size": 4096,
    "max_position_embeddings": 2048, "num_attention_heads": 16, "num_key_value_heads": 16,
    "num_hidden_layers": 24, "num_experts": [20], "moe_use_mixtral_gating": false,
    "moe_2layer_gate": false, "moe_use_logits_norm": true, "moe_gate_norm_std": 1.0,
    "moe_feature_no_mul_topk": true, "moe_expert_interval": 1, "rms_norm_eps": 1e-06,
    "tie_word_embeddings": false, "torch_dtype": "bfloat16", "rope_theta": 10000})");
  const ModelConfig c = ModelConfig::from_json(released, "7b.json");
  EXPECT_EQ(c.weight_bound(), int64_t{2} * 65536 * 1536 + int64_t{24} * (4 * 1536 * 1536 + 3 * 1536 * 4096 * 16 + 20 * 1536));
  auto err = [&](const std::string& key, const nlohmann::json& v) {
    nlohmann::json j = released;
    j[key] = v;
    return error_message([&] { ModelConfig::from_json(j, "cfg.json"); });
  };
  EXPECT_NE(err("num_hidden_layers", 1000000).find("cfg.json: field 'num_hidden_layers' must be <= 1024"),
            std::string::npos);
  EXPECT_NE(err("max_position_embeddings", int64_t{1} << 40)
                .find("cfg.json: field 'max_position_embeddings' must be <= 131072"),
            std::string::npos);
  EXPECT_NE(err("hidden_size", int64_t{1} << 50).find("cfg.json: field 'hidden_size'"), std::string::npos);
  // Each within its limit, the model as a whole is not: 1024 layers of the 7B's width.
  const std::string m = err("num_hidden_layers", 1024);
  EXPECT_NE(m.find("cfg.json: field 'hidden_size' with these dimensions gives a model of about"), std::string::npos)
      << m;
  EXPECT_NE(m.find("above the limit 34359738368"), std::string::npos) << m;
}

TEST(ModelConfig, SetZcBiasRefusesBadValuesAndModelsWithoutZeroComputationExperts) {
  ModelConfig c = tiny_config("moepp");
  EXPECT_NE(error_message([&] { c.set_zc_bias(std::numeric_limits<float>::quiet_NaN()); }).find("finite"),
            std::string::npos);
  EXPECT_NE(error_message([&] { c.set_zc_bias(101.0f); }).find("[-100, 100]"), std::string::npos);
  ModelConfig vanilla = tiny_config("topk");
  EXPECT_NE(error_message([&] { vanilla.set_zc_bias(1.0f); }).find("no zero-computation experts"), std::string::npos);
  vanilla.set_zc_bias(0.0f);  // 0 is always allowed
  c.set_zc_bias(-3.0f);
  EXPECT_EQ(c.layer_moe(1, false).zc_bias, -3.0f);
}

}  // namespace
}  // namespace moepp
