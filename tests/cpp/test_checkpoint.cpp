// Unit tests of model checkpoints (src/model/checkpoint): save/load round trip (no temporary files left),
// and every fault of a checkpoint directory (malformed or missing config, missing / mis-shaped /
// unexpected tensor, the optional gate_map of layer 0, truncated and corrupt shards) is an error naming
// the file and the tensor or field.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/tensor.h"
#include "io/safetensors.h"
#include "model/checkpoint.h"
#include "model/model.h"
#include "test_util.h"
#include "tiny_models.h"

namespace moepp {
namespace {

using namespace test;

namespace fs = std::filesystem;

TEST(Checkpoint, RoundTrip) {
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

// A model written in expert-parallel shards (each shard's file, then the index) loads whole, and by
// shard in another count: each holds the dense tensors and exactly its experts.
TEST(Checkpoint, ExpertShardsLoadWholeAndInAnyOtherCount) {
  ScratchDir tmp{"moepp_test_model"};
  const ModelConfig c = tiny_config();
  const int64_t nf = c.layer_moe(0, false).n_ffn();
  ASSERT_EQ(nf % 2, 0) << "the tiny model needs an even FFN expert count";
  const ModelParams p = tiny_params(c, 13);
  for (int i = 0; i < 2; ++i) {
    ModelParams mine = p;
    keep_shard(mine, c, {i, 2});
    save_model_shard(tmp.dir().string(), c, mine, {i, 2});
  }
  save_model_index(tmp.dir().string(), c, 2);
  EXPECT_TRUE(fs::exists(tmp.dir() / "model-00001-of-00002.safetensors"));
  EXPECT_TRUE(fs::exists(tmp.dir() / "model-00002-of-00002.safetensors"));
  EXPECT_FALSE(fs::exists(tmp.dir() / "model.safetensors"));
  const ModelParams whole = load_model(tmp.dir().string()).second;
  auto a = p.named(c);
  auto b = whole.named(c);
  for (size_t i = 0; i < a.size(); ++i) EXPECT_EQ(a[i].second->data, b[i].second->data) << a[i].first;
  for (const int count : {1, 2, static_cast<int>(nf)}) {
    for (int index = 0; index < count; ++index) {
      const ModelParams part = load_model(tmp.dir().string(), {index, count}).second;
      for (const ParamSpec& spec : param_specs(c)) {
        const bool held = !is_ffn_expert(spec) || spec.moe.index / (nf / count) == index;
        EXPECT_EQ(shard_holds(c, spec, {index, count}), held) << spec.name;
        if (held)
          EXPECT_EQ(part.slot(spec)->data, p.slot(spec)->data) << spec.name << " in shard " << index << "/" << count;
        else
          EXPECT_EQ(part.slot(spec)->numel(), 0u) << spec.name << " is not shard " << index << "/" << count << "'s";
      }
    }
  }
  const std::string e = error_message([&] { load_model(tmp.dir().string(), {0, static_cast<int>(nf) + 1}); });
  EXPECT_NE(e.find("cannot be split evenly"), std::string::npos) << e;
}

class CheckpointFaults : public ::testing::Test {
 protected:
  ScratchDir tmp{"moepp_test_model"};
  ModelConfig c = tiny_config();
  ModelParams p = tiny_params(c, 12);
  std::string dir() const { return tmp.dir().string(); }
  std::string load_error() const { return error_message([&] { load_model(dir()); }); }
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

TEST_F(CheckpointFaults, MalformedConfig) {
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

TEST_F(CheckpointFaults, MissingTensor) {
  rewrite([](auto& ts) {
    std::erase_if(ts, [](const auto& x) { return x.first == "model.layers.1.self_attn.k_proj.weight"; });
  });
  const std::string e = load_error();
  EXPECT_NE(e.find("model.safetensors: missing tensor 'model.layers.1.self_attn.k_proj.weight'"), std::string::npos)
      << e;
}

TEST_F(CheckpointFaults, MisshapedTensor) {
  rewrite([](auto& ts) {
    for (auto& [n, t] : ts)
      if (n == "model.layers.0.mlp.moe.experts.experts.2.up_proj.weight") t = Tensor({48, 15});
  });
  const std::string e = load_error();
  EXPECT_NE(e.find("tensor 'model.layers.0.mlp.moe.experts.experts.2.up_proj.weight' has shape [48, 15], expected [48, 16]"),
            std::string::npos)
      << e;
}

TEST_F(CheckpointFaults, UnexpectedTensor) {
  rewrite([](auto& ts) { ts.emplace_back("model.layers.0.self_attn.rotary_emb.inv_freqs", Tensor({2})); });
  const std::string e = load_error();
  EXPECT_NE(e.find("unexpected tensor 'model.layers.0.self_attn.rotary_emb.inv_freqs'"), std::string::npos) << e;
}

TEST_F(CheckpointFaults, Layer0GateMapIsOptional) {
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

TEST_F(CheckpointFaults, TruncatedAndCorruptShards) {
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
