// Unit tests of the training config (src/train/train_config): the defaults of docs/training.md, every
// key read, the JSON round trip, every refused value (unknown key, missing field, wrong type, out of
// range) an error naming the file and the field, and from_file's paths relative to the config file.
#include <gtest/gtest.h>

#include <filesystem>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "train/train_config.h"
#include "test_util.h"

namespace moepp {
namespace {

using namespace test;
using nlohmann::json;

// The smallest valid config: a model block and the two texts (absolute paths).
json minimal() {
  return {{"model", {{"hidden_size", 16}}}, {"train_text", "/corpus/train.txt"}, {"valid_text", "/corpus/valid.txt"}};
}

TEST(TrainConfig, DefaultsAreTheDocumentedOnes) {
  const TrainConfig c = TrainConfig::from_json(minimal(), "cfg.json");
  EXPECT_EQ(c.model, json({{"hidden_size", 16}}));
  EXPECT_EQ(c.train_text, "/corpus/train.txt");
  EXPECT_EQ(c.valid_text, "/corpus/valid.txt");
  EXPECT_EQ(c.tokenizer_vocab, 4096);
  EXPECT_EQ(c.batch_size, 8);
  EXPECT_EQ(c.seq_len, 128);
  EXPECT_EQ(c.grad_accum, 1);
  EXPECT_EQ(c.steps, 200);
  EXPECT_FLOAT_EQ(c.lr, 3e-3f);
  EXPECT_FLOAT_EQ(c.min_lr, 3e-4f);
  EXPECT_FLOAT_EQ(c.init_lr, 1e-7f);
  EXPECT_EQ(c.warmup_steps, 20);
  EXPECT_TRUE(c.cosine);
  EXPECT_FLOAT_EQ(c.weight_decay, 0.1f);
  EXPECT_FLOAT_EQ(c.grad_clip, 1.0f);
  EXPECT_FLOAT_EQ(c.beta1, 0.9f);
  EXPECT_FLOAT_EQ(c.beta2, 0.95f);
  EXPECT_FLOAT_EQ(c.init_std, 0.02f);
  EXPECT_EQ(c.seed, 1u);
  EXPECT_EQ(c.eval_every, 50);
  EXPECT_EQ(c.eval_batches, 8);
  EXPECT_EQ(c.ckpt_every, 50);
  EXPECT_EQ(c.sample_prompt, "The");
  EXPECT_EQ(c.sample_tokens, 60);
}

TEST(TrainConfig, ReadsEveryKey) {
  json j = minimal();
  j.update({{"tokenizer_vocab", 512}, {"batch_size", 3},     {"seq_len", 64},         {"grad_accum", 2},
            {"steps", 7},             {"lr", 0.5},           {"min_lr", 0.25},        {"init_lr", 0.125},
            {"warmup_steps", 0},      {"schedule", "linear"}, {"weight_decay", 0.0},  {"grad_clip", 0.0},
            {"beta1", 0.0},           {"beta2", 0.5},        {"init_std", 0.5},       {"seed", 99},
            {"eval_every", 4},        {"eval_batches", 1},   {"ckpt_every", 6},       {"sample_prompt", ""},
            {"sample_tokens", 0},     {"comment", "any text; ignored"}});
  const TrainConfig c = TrainConfig::from_json(j, "cfg.json");
  EXPECT_FALSE(c.cosine);
  EXPECT_EQ(c.seed, 99u);
  // Every field holds the value given (the values are exact in float); the comment is dropped.
  json want = j;
  want.erase("comment");
  EXPECT_EQ(c.to_json(), want);
  // Integral values are numbers too.
  j["lr"] = 1;
  EXPECT_EQ(TrainConfig::from_json(j, "cfg.json").lr, 1.0f);
}

TEST(TrainConfig, JsonRoundTrip) {
  json j = minimal();
  j.update({{"schedule", "linear"}, {"steps", 9}, {"lr", 0.5}, {"sample_prompt", "Once"}});
  const TrainConfig c = TrainConfig::from_json(j, "cfg.json");
  const json out = c.to_json();
  EXPECT_EQ(out["schedule"], "linear");
  EXPECT_EQ(out["steps"], 9);
  EXPECT_FALSE(out.contains("comment"));
  EXPECT_EQ(TrainConfig::from_json(out, "out.json").to_json(), out);
}

TEST(TrainConfig, EveryErrorNamesTheFileAndTheField) {
  struct Case {
    std::string field;
    json value;  // null: the field is removed
    std::string needle;
  };
  const std::vector<Case> cases = {
      {"lerning_rate", 0.1, "unknown field 'lerning_rate'"},
      {"model", nullptr, "field 'model' (an object) is required"},
      {"model", json::array({1}), "field 'model' (an object) is required"},
      {"train_text", nullptr, "field 'train_text' is required"},
      {"train_text", "", "field 'train_text' is required"},
      {"train_text", 3, "field 'train_text' must be a string, got 3"},
      {"valid_text", false, "field 'valid_text' must be a string"},
      {"sample_prompt", json::array(), "field 'sample_prompt' must be a string"},
      {"schedule", 1, "field 'schedule' must be a string"},
      {"schedule", "step", "field 'schedule' must be cosine or linear"},
      {"batch_size", "8", "field 'batch_size' must be an integer, got \"8\""},
      {"seq_len", 12.5, "field 'seq_len' must be an integer"},
      {"tokenizer_vocab", true, "field 'tokenizer_vocab' must be an integer"},
      {"seed", 1.5, "field 'seed' must be an integer"},
      {"lr", "fast", "field 'lr' must be a number, got \"fast\""},
      {"beta2", json::object(), "field 'beta2' must be a number"},
      {"batch_size", 0, "field 'batch_size' must be > 0"},
      {"seq_len", -1, "field 'seq_len' must be > 0"},
      {"grad_accum", 0, "field 'grad_accum' must be > 0"},
      {"steps", 0, "field 'steps' must be > 0"},
      {"eval_every", 0, "field 'eval_every' must be > 0"},
      {"eval_batches", -2, "field 'eval_batches' must be > 0"},
      {"ckpt_every", 0, "field 'ckpt_every' must be > 0"},
      {"tokenizer_vocab", 299, "field 'tokenizer_vocab' must be >= 300"},
      {"warmup_steps", -1, "field 'warmup_steps' must be >= 0"},
      {"lr", 0.0, "field 'lr' must be > 0"},
      {"min_lr", -1e-4, "field 'min_lr' must be >= 0"},
      {"init_lr", -1.0, "field 'init_lr' must be >= 0"},
      {"weight_decay", -0.1, "field 'weight_decay' must be >= 0"},
      {"grad_clip", -1.0, "field 'grad_clip' must be >= 0"},
      {"beta1", 1.0, "field 'beta1' must be in [0, 1)"},
      {"beta1", -0.1, "field 'beta1' must be in [0, 1)"},
      {"beta2", 1.5, "field 'beta2' must be in [0, 1)"},
      {"sample_tokens", -1, "field 'sample_tokens' must be >= 0"},
  };
  for (const Case& k : cases) {
    json j = minimal();
    if (k.value.is_null())
      j.erase(k.field);
    else
      j[k.field] = k.value;
    const std::string msg = error_message([&] { TrainConfig::from_json(j, "runs/cfg.json"); });
    EXPECT_NE(msg.find("runs/cfg.json: " + k.needle), std::string::npos) << k.field << ": " << msg;
  }
  EXPECT_NE(error_message([] { TrainConfig::from_json(json::array(), "a.json"); })
                .find("a.json: a training config must be a JSON object"),
            std::string::npos);
}

TEST(TrainConfig, FromFileResolvesTextsRelativeToTheConfigFile) {
  const ScratchDir tmp("moepp_train_config");
  const std::filesystem::path run = tmp.dir() / "runs";
  std::filesystem::create_directories(run);
  json j = minimal();
  j["train_text"] = "moepp_no_such_dir/train.txt";  // relative, and not there from the working directory
  j["valid_text"] = "/corpus/valid.txt";            // absolute: kept
  const std::string cfg = (run / "cfg.json").string();
  write_bytes(cfg, j.dump());
  TrainConfig c = TrainConfig::from_file(cfg);
  EXPECT_EQ(c.train_text, (run / "moepp_no_such_dir/train.txt").string());
  EXPECT_EQ(c.valid_text, "/corpus/valid.txt");
  j["train_text"] = "../moepp_no_such_dir/train.txt";
  j.erase("valid_text");  // absent: stays empty
  write_bytes(cfg, j.dump());
  c = TrainConfig::from_file(cfg);
  EXPECT_EQ(c.train_text, (run / "../moepp_no_such_dir/train.txt").string());
  EXPECT_EQ(c.valid_text, "");

  // The file's faults and its fields' faults name the file.
  j["steps"] = 0;
  write_bytes(cfg, j.dump());
  EXPECT_NE(error_message([&] { TrainConfig::from_file(cfg); }).find(cfg + ": field 'steps' must be > 0"),
            std::string::npos);
  write_bytes(cfg, "{\"model\": ");
  const std::string bad = error_message([&] { TrainConfig::from_file(cfg); });
  EXPECT_NE(bad.find(cfg), std::string::npos) << bad;
  EXPECT_NE(bad.find("invalid JSON"), std::string::npos) << bad;
  const std::string missing = (run / "missing.json").string();
  EXPECT_NE(error_message([&] { TrainConfig::from_file(missing); }).find(missing), std::string::npos);
}

}  // namespace
}  // namespace moepp
