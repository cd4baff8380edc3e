// Tests for io/json_fields: every getter on an absent key, a null value (the same as absent: the
// default, or "is required"), a value of the wrong type, a non-finite number and an integer out of its
// type's range, each error naming the source and the field; and the three configs that read their keys
// through it (model, MoE layer, training) keeping that rule.
#include <gtest/gtest.h>

#include <cstdint>
#include <limits>
#include <string>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "io/json_fields.h"
#include "model/model_config.h"
#include "train/train_config.h"
#include "test_util.h"

using moepp::ModelConfig;
using moepp::TrainConfig;
using nlohmann::json;
using namespace moepp::io;
using moepp::test::error_message;

namespace {

const std::string kSource = "cfg.json";

TEST(JsonFields, AbsentOrNullKeyTakesTheDefault) {
  for (const json& j : {json::object(), json{{"x", nullptr}}}) {
    SCOPED_TRACE(j.dump());
    EXPECT_FALSE(has_field(j, "x"));
    EXPECT_EQ(get_int(j, "x", kSource, 7), 7);
    EXPECT_EQ(get_int<int32_t>(j, "x", kSource, -3), -3);
    EXPECT_EQ(get_int<uint64_t>(j, "x", kSource, 9u), 9u);
    EXPECT_EQ(get_number(j, "x", kSource, 0.5), 0.5);
    EXPECT_TRUE(get_bool(j, "x", kSource, true));
    EXPECT_FALSE(get_bool(j, "x", kSource, false));
    EXPECT_EQ(get_string(j, "x", kSource, "d"), "d");
    EXPECT_EQ(get_token_id(j, "x", kSource, 2), 2);
    EXPECT_EQ(error_message([&] { require_int(j, "x", kSource); }), "cfg.json: field 'x' is required");
  }
}

TEST(JsonFields, PresentValuesAreRead) {
  const json j = json::parse(R"({"i": -5, "u": 18446744073709551615, "n": 1.5, "ni": 3, "b": false,
                                 "s": "text", "t": 2147483647})");
  EXPECT_TRUE(has_field(j, "i"));
  EXPECT_EQ(get_int(j, "i", kSource, 0), -5);
  EXPECT_EQ(require_int(j, "i", kSource), -5);
  EXPECT_EQ(get_int<int32_t>(j, "i", kSource, 0), -5);
  EXPECT_EQ(get_int<uint64_t>(j, "u", kSource, 0u), std::numeric_limits<uint64_t>::max());
  EXPECT_EQ(get_number(j, "n", kSource, 0.0), 1.5);
  EXPECT_EQ(get_number(j, "ni", kSource, 0.0), 3.0);  // an integer is a number
  EXPECT_FALSE(get_bool(j, "b", kSource, true));
  EXPECT_EQ(get_string(j, "s", kSource, ""), "text");
  EXPECT_EQ(get_token_id(j, "t", kSource, 0), 2147483647);
}

TEST(JsonFields, WrongTypeIsAnError) {
  const json j = json::parse(R"({"f": 2.5, "s": "2", "b": true, "i": 1, "l": [1]})");
  EXPECT_EQ(error_message([&] { get_int(j, "f", kSource, 0); }), "cfg.json: field 'f' must be an integer, got 2.5");
  EXPECT_EQ(error_message([&] { get_int(j, "s", kSource, 0); }), "cfg.json: field 's' must be an integer, got \"2\"");
  EXPECT_EQ(error_message([&] { require_int(j, "b", kSource); }), "cfg.json: field 'b' must be an integer, got true");
  EXPECT_EQ(error_message([&] { get_int<uint64_t>(j, "f", kSource, 0u); }),
            "cfg.json: field 'f' must be an integer, got 2.5");
  EXPECT_EQ(error_message([&] { get_number(j, "s", kSource, 0.0); }), "cfg.json: field 's' must be a number, got \"2\"");
  EXPECT_EQ(error_message([&] { get_number(j, "b", kSource, 0.0); }), "cfg.json: field 'b' must be a number, got true");
  EXPECT_EQ(error_message([&] { get_bool(j, "i", kSource, false); }), "cfg.json: field 'i' must be true or false, got 1");
  EXPECT_EQ(error_message([&] { get_bool(j, "s", kSource, false); }),
            "cfg.json: field 's' must be true or false, got \"2\"");
  EXPECT_EQ(error_message([&] { get_string(j, "i", kSource, ""); }), "cfg.json: field 'i' must be a string, got 1");
  EXPECT_EQ(error_message([&] { get_string(j, "l", kSource, ""); }), "cfg.json: field 'l' must be a string, got [1]");
  EXPECT_EQ(error_message([&] { get_token_id(j, "f", kSource, 0); }), "cfg.json: field 'f' must be an integer, got 2.5");
}

TEST(JsonFields, NonFiniteNumberIsAnError) {
  // JSON text cannot hold them, but a config built in code can.
  const json j = {{"inf", std::numeric_limits<double>::infinity()},
                  {"nan", std::numeric_limits<double>::quiet_NaN()},
                  {"neg", -std::numeric_limits<double>::infinity()}};
  for (const std::string key : {"inf", "nan", "neg"})
    EXPECT_EQ(error_message([&] { get_number(j, key, kSource, 0.0); }), "cfg.json: field '" + key + "' must be finite");
}

TEST(JsonFields, OutOfRangeIntIsAnError) {
  const json j = json::parse(R"({"big": 18446744073709551615, "i32": 2147483648, "neg": -1,
                                 "low32": -2147483649, "tok": 2147483648})");
  EXPECT_EQ(error_message([&] { get_int(j, "big", kSource, 0); }),
            "cfg.json: field 'big' must be an integer in [-9223372036854775808, 9223372036854775807], got "
            "18446744073709551615");
  EXPECT_EQ(error_message([&] { require_int(j, "big", kSource); }),
            "cfg.json: field 'big' must be an integer in [-9223372036854775808, 9223372036854775807], got "
            "18446744073709551615");
  EXPECT_EQ(error_message([&] { get_int<int32_t>(j, "i32", kSource, 0); }),
            "cfg.json: field 'i32' must be an integer in [-2147483648, 2147483647], got 2147483648");
  EXPECT_EQ(error_message([&] { get_int<int32_t>(j, "low32", kSource, 0); }),
            "cfg.json: field 'low32' must be an integer in [-2147483648, 2147483647], got -2147483649");
  EXPECT_EQ(error_message([&] { get_int<uint64_t>(j, "neg", kSource, 0u); }),
            "cfg.json: field 'neg' must be an integer in [0, 18446744073709551615], got -1");
  EXPECT_EQ(error_message([&] { get_token_id(j, "neg", kSource, 0); }),
            "cfg.json: field 'neg' must be a token id >= 0, got -1");
  EXPECT_EQ(error_message([&] { get_token_id(j, "tok", kSource, 0); }),
            "cfg.json: field 'tok' must be a token id >= 0, got 2147483648");
  EXPECT_EQ(get_int(j, "i32", kSource, 0), 2147483648);  // fits int64
}

TEST(JsonFields, NotAnObjectHoldsNoField) {
  const json a = json::array({1, 2});
  EXPECT_FALSE(has_field(a, "x"));
  EXPECT_EQ(get_int(a, "x", kSource, 4), 4);
  EXPECT_EQ(field_where("run/train.json", "lr"), "run/train.json: field 'lr'");
}

// A small valid config.json: the required keys only.
json required_model_keys() {
  return {{"vocab_size", 64}, {"hidden_size", 16}, {"intermediate_size", 24}, {"num_hidden_layers", 1},
          {"num_attention_heads", 2}, {"num_experts", {8}}};
}

TEST(JsonFieldsInConfigs, NullKeysAreDefaultsInModelAndLayerConfigs) {
  const json absent = required_model_keys();
  json nulls = absent;
  for (const char* key :
       {"num_key_value_heads", "max_position_embeddings", "rms_norm_eps", "rope_theta", "bos_token_id",
        "eos_token_id", "pad_token_id", "tie_word_embeddings", "hidden_act", "model_type", "architectures",
        "rope_scaling", "attention_bias", "mlp_bias", "head_dim", "n_zero_experts", "n_copy_experts",
        "n_constant_experts", "moe_top_k", "moe_router", "moe_2layer_gate", "moe_use_logits_norm",
        "moe_gate_norm_std", "moe_use_mixtral_gating", "moe_feature_no_mul_topk", "moe_gating_residual", "moe_tau",
        "moe_aux_loss_coef", "moe_capacity_factor", "moe_relu_l1_coef", "moe_relu_target_experts", "moe_expert_interval", "layer_index",
        "training"})
    nulls[key] = nullptr;
  EXPECT_EQ(ModelConfig::from_json(nulls, "c.json").to_json(), ModelConfig::from_json(absent, "c.json").to_json());
  EXPECT_FALSE(ModelConfig::from_json(nulls, "c.json").moe.capacity_factor.has_value());  // null = dropless
  for (const char* key : {"vocab_size", "hidden_size", "intermediate_size", "num_experts"}) {
    json j = absent;
    j[key] = nullptr;
    EXPECT_EQ(error_message([&] { ModelConfig::from_json(j, "c.json"); }),
              "c.json: field '" + std::string(key) + "' is required");
  }
}

TEST(JsonFieldsInConfigs, NullKeysAreDefaultsInTrainingConfigs) {
  const json absent = {{"model", required_model_keys()}, {"train_text", "train.txt"}};
  json nulls = absent;
  for (const char* key : {"valid_text", "tokenizer_vocab", "batch_size", "seq_len", "grad_accum", "steps", "lr",
                          "min_lr", "init_lr", "warmup_steps", "schedule", "weight_decay", "grad_clip", "beta1",
                          "beta2", "init_std", "seed", "eval_every", "eval_batches", "ckpt_every",
                          "sample_prompt", "sample_tokens", "comment"})
    nulls[key] = nullptr;
  EXPECT_EQ(TrainConfig::from_json(nulls, "t.json").to_json(), TrainConfig::from_json(absent, "t.json").to_json());
  json j = absent;
  j["train_text"] = nullptr;
  EXPECT_EQ(error_message([&] { TrainConfig::from_json(j, "t.json"); }), "t.json: field 'train_text' is required");
  j = absent;
  j["tokenizer_vocab"] = 4294967296;  // beyond int
  EXPECT_EQ(error_message([&] { TrainConfig::from_json(j, "t.json"); }),
            "t.json: field 'tokenizer_vocab' must be an integer in [-2147483648, 2147483647], got 4294967296");
}

}  // namespace
