// Unit tests of ModelConfig (src/model/model_config): config.json round trips (derived head_dim and KV
// heads, the Hugging Face identity keys, the MoE++ extension keys), and every refused or missing field
// is an error naming it.
#include <gtest/gtest.h>

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

}  // namespace
}  // namespace moepp
