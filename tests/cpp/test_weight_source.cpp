// Unit tests of io/weight_source: open_weights finds model.safetensors, its index, pytorch_model.bin or
// its index (in that order) and reads single and sharded PyTorch checkpoints (built byte by byte by
// tests/cpp/torch_checkpoint_files.h) and safetensors files alike; index faults and absent tensors are
// errors naming the file.
#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include "core/tensor.h"
#include "io/safetensors.h"
#include "io/weight_source.h"
#include "test_util.h"
#include "torch_checkpoint_files.h"

namespace fs = std::filesystem;
using namespace moepp::io;
using namespace moepp::test;

namespace {

class WeightSourceTest : public CheckpointFilesTest {
 protected:
  WeightSourceTest() : CheckpointFilesTest("moepp_weight_source") {}
};

TEST_F(WeightSourceTest, OpenWeightsSingleBin) {
  write("m/pytorch_model.bin", standard_zip());
  auto src = open_weights(path("m"));
  EXPECT_EQ(src->source(), path("m/pytorch_model.bin"));
  EXPECT_EQ(src->names(), (std::vector<std::string>{"a", "b", "t"}));
  EXPECT_TRUE(src->contains("t"));
  EXPECT_FALSE(src->contains("zz"));
  const WeightInfo i = src->info("t");
  EXPECT_EQ(i.shape, (std::vector<int64_t>{3, 2}));
  EXPECT_EQ(i.dtype, DType::kF32);
  std::vector<float> t(6);
  src->read_f32("t", t.data());
  EXPECT_EQ(t, (std::vector<float>{0, 3, 1, 4, 2, 5}));
  EXPECT_EQ(src->mapped("t"), nullptr);
  EXPECT_NE(src->mapped("a"), nullptr);
  expect_error([&] { src->info("zz"); }, {path("m/pytorch_model.bin"), "'zz'"});
  std::vector<float> buf(6);
  expect_error([&] { src->read_f32("missing.weight", buf.data()); }, {path("m/pytorch_model.bin"), "'missing.weight'"});
}

TEST_F(WeightSourceTest, OpenWeightsShardedBin) {
  // Shard 1: a and t (storage 0); shard 2: b.
  const std::vector<TensorSpec> s = standard_specs();
  write("m/pytorch_model-00001-of-00002.bin",
        make_zip({{"archive/data.pkl", state_dict_pickle({s[0], s[1]})}, {"archive/data/0", floats(kStore)}}));
  write("m/pytorch_model-00002-of-00002.bin",
        make_zip({{"archive/data.pkl", state_dict_pickle({s[2]})}, {"archive/data/1", bf16s(kB)}}));
  const std::string idx =
      write("m/pytorch_model.bin.index.json",
            R"({"metadata": {"total_size": 56}, "weight_map": {"a": "pytorch_model-00001-of-00002.bin",
                "t": "pytorch_model-00001-of-00002.bin", "b": "pytorch_model-00002-of-00002.bin"}})");
  auto src = open_weights(path("m"));
  EXPECT_EQ(src->source(), idx);
  EXPECT_EQ(src->names(), (std::vector<std::string>{"a", "b", "t"}));
  std::vector<float> b(4), a(6);
  src->read_f32("b", b.data());
  src->read_f32("a", a.data());
  EXPECT_EQ(b, kB);
  EXPECT_EQ(a, (std::vector<float>{2, 3, 4, 5, 6, 7}));

  write("m/pytorch_model.bin.index.json", R"({"weight_map": {"a": "nope.bin"}})");
  expect_error([&] { open_weights(path("m")); }, {idx, "'nope.bin'", "does not exist"});
  write("m/pytorch_model.bin.index.json", R"({"weight_map": {"b": "pytorch_model-00001-of-00002.bin"}})");
  expect_error([&] { open_weights(path("m")); }, {idx, "tensor 'b'", "does not hold it"});
  write("m/pytorch_model.bin.index.json", R"({"weight_map": {"b": 3}})");
  expect_error([&] { open_weights(path("m")); }, {idx, "not a string"});
  write("m/pytorch_model.bin.index.json", R"({"weight_map": )");
  expect_error([&] { open_weights(path("m")); }, {idx, "invalid JSON"});
}

TEST_F(WeightSourceTest, OpenWeightsOrderAndSafetensors) {
  expect_error([&] { open_weights(path("nowhere")); }, {path("nowhere"), "no such file"});
  fs::create_directories(path("e"));
  expect_error([&] { open_weights(path("e")); }, {path("e"), "pytorch_model.bin.index.json"});

  write("m/pytorch_model.bin", standard_zip());
  SafetensorsWriter w;
  const moepp::Tensor x({2, 2}, 0.5f);
  w.add_f32("x", x);
  w.add_bf16("y", x);
  w.write(path("m/model.safetensors"));
  auto src = open_weights(path("m"));  // model.safetensors comes first
  EXPECT_EQ(src->source(), path("m/model.safetensors"));
  EXPECT_EQ(src->names(), (std::vector<std::string>{"x", "y"}));
  std::vector<float> y(4);
  src->read_f32("y", y.data());
  EXPECT_EQ(y, std::vector<float>(4, 0.5f));
  EXPECT_EQ(src->info("y").dtype, DType::kBF16);
  ASSERT_NE(src->mapped("x"), nullptr);
  float f;
  std::memcpy(&f, src->mapped("x"), 4);
  EXPECT_EQ(f, 0.5f);
  expect_error([&] { src->info("a"); }, {path("m/model.safetensors"), "'a'"});
  // A weights file can be named directly.
  EXPECT_EQ(open_weights(path("m/pytorch_model.bin"))->names().size(), 3u);
}

}  // namespace
