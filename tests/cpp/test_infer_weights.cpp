// Unit tests of InferWeights (src/infer/infer_weights) loading BF16 weights in place from a
// memory-mapped safetensors file (InferWeights::load over a shared WeightSource): no copy is made, the
// decoder gives bit for bit the logits of the copying load, the mapping outlives the source handle,
// and F32-stored tensors or other dtypes are converted instead. A shard of the FFN experts
// (expert-parallel inference) loads only its experts, the same values as the whole load, and the
// dense-weight hash is the same for every shard and changes with any dense value. Quantised checkpoints
// (INT8, Q4) load in place too.
#include <gtest/gtest.h>

#include <cstdint>
#include <memory>
#include <nlohmann/json.hpp>
#include <vector>

#include "core/error.h"
#include "infer/decoder.h"
#include "infer/kv_cache.h"
#include "infer/infer_weights.h"
#include "model/checkpoint.h"
#include "io/safetensors.h"
#include "io/weight_source.h"
#include "model/model_params.h"
#include "test_util.h"

namespace moepp {
namespace {

ModelConfig small_config() {
  const nlohmann::json j = {{"vocab_size", 61},      {"hidden_size", 32},         {"intermediate_size", 24},
                            {"num_hidden_layers", 2}, {"num_attention_heads", 4}, {"num_key_value_heads", 2},
                            {"max_position_embeddings", 64}, {"num_experts", {8}},  {"n_zero_experts", 1},
                            {"n_copy_experts", 1},    {"n_constant_experts", 2}};
  return ModelConfig::from_json(j, "test");
}

// Writes dir/config.json and dir/model.safetensors with every tensor stored as `dtype` (BF16 or F32).
void write_checkpoint(const std::string& dir, const ModelConfig& cfg, io::DType dtype) {
  ModelParams p = ModelParams::zeros(cfg);
  p.init_random(cfg, 5, 0.2f);
  save_model(dir, cfg, p);  // config.json (and an F32 model.safetensors, replaced below for BF16)
  if (dtype == io::DType::kBF16) {
    io::SafetensorsWriter w;
    for (const auto& [name, t] : p.named(cfg)) w.add_bf16(name, *t);
    w.write(dir + "/model.safetensors");
  }
}

std::vector<float> logits_of(const ModelConfig& cfg, InferWeights w, const std::vector<int32_t>& tok) {
  const Decoder dec(cfg, std::move(w));
  KvCache cache = dec.make_cache(1, 64);
  DecoderScratch sc;
  Tensor logits;
  dec.forward(logits, cache, {{0, tok.data(), static_cast<int64_t>(tok.size()), true}}, sc);
  return logits.data;
}

TEST(InferWeights, Bf16CheckpointIsReadInPlaceWithTheSameLogits) {
  const test::ScratchDir tmp("weight_mapping");
  const ModelConfig cfg = small_config();
  write_checkpoint(tmp.dir().string(), cfg, io::DType::kBF16);
  const std::vector<int32_t> tok = test::random_tokens(20, cfg.vocab, 3);

  std::shared_ptr<const io::WeightSource> src = io::open_weights(tmp.dir().string());
  const InferWeights copied = InferWeights::load(cfg, *src, WeightDType::kBF16);
  InferWeights mapped = InferWeights::load(cfg, src, WeightDType::kBF16);
  EXPECT_EQ(copied.mapped_bytes(), 0u);
  // Every large matrix is a view: q, k, v, o, the experts and lm_head, 2 bytes an element.
  size_t want = 0;
  for (const ParamSpec& s : param_specs(cfg))
    if (is_weight_matrix(s)) want += Tensor::numel_of(s.shape) * 2;
  EXPECT_EQ(mapped.mapped_bytes(), want);
  EXPECT_EQ(mapped.bytes() + want, copied.bytes());

  src.reset();  // the weights keep the mapping alive
  const std::vector<float> a = logits_of(cfg, std::move(mapped), tok);
  const std::vector<float> b = logits_of(cfg, InferWeights(copied), tok);
  ASSERT_EQ(a.size(), b.size());
  EXPECT_EQ(a, b);  // bit for bit
}

TEST(InferWeights, F32CheckpointAndOtherDtypesAreConverted) {
  const test::ScratchDir tmp("weight_mapping");
  const ModelConfig cfg = small_config();
  write_checkpoint(tmp.dir().string(), cfg, io::DType::kF32);
  std::shared_ptr<const io::WeightSource> src = io::open_weights(tmp.dir().string());
  EXPECT_EQ(InferWeights::load(cfg, src, WeightDType::kBF16).mapped_bytes(), 0u);  // F32 stored: converted
  EXPECT_EQ(InferWeights::load(cfg, src, WeightDType::kF32).mapped_bytes(), 0u);
  EXPECT_EQ(InferWeights::load(cfg, src, WeightDType::kInt8).mapped_bytes(), 0u);
}

// A quantised checkpoint (what moepp convert --dtype int8|q4 writes: add_stored_matrix for the large
// matrices, F32 for the rest) loads in place with its dtype, with the logits of quantising the F32
// weights at load; with another dtype it is refused naming the stored one, and the fp32 loader refuses
// it as quantised.
TEST(InferWeights, QuantisedCheckpointIsReadInPlaceWithTheSameLogits) {
  const ModelConfig cfg = small_config();
  ModelParams p = ModelParams::zeros(cfg);
  p.init_random(cfg, 5, 0.2f);
  const std::vector<int32_t> tok = test::random_tokens(20, cfg.vocab, 3);
  for (const WeightDType d : {WeightDType::kInt8, WeightDType::kQ4}) {
    const test::ScratchDir tmp("quantised");
    save_model(tmp.dir().string(), cfg, p);
    io::SafetensorsWriter w;
    size_t want = 0;
    for (const ParamSpec& spec : param_specs(cfg)) {
      const Tensor& t = *p.slot(spec);
      if (!is_weight_matrix(spec)) {
        w.add_f32(spec.name, t);
        continue;
      }
      add_stored_matrix(w, spec.name, t.shape[0], t.shape[1], d,
                        [&t, d] { return WeightMatrix::from_f32(t.ptr(), t.shape[0], t.shape[1], d); });
      want += WeightMatrix::from_f32(t.ptr(), t.shape[0], t.shape[1], d).bytes();
    }
    w.write((tmp.dir() / "model.safetensors").string());
    std::shared_ptr<const io::WeightSource> src = io::open_weights(tmp.dir().string());
    InferWeights mapped = InferWeights::load(cfg, src, d);
    EXPECT_EQ(mapped.mapped_bytes(), want) << weight_dtype_name(d);
    const InferWeights copied = InferWeights::load(cfg, *src, d);  // no owner: copied
    EXPECT_EQ(copied.mapped_bytes(), 0u);
    src.reset();
    const std::vector<float> a = logits_of(cfg, std::move(mapped), tok);
    EXPECT_EQ(a, logits_of(cfg, InferWeights(copied), tok)) << weight_dtype_name(d);
    EXPECT_EQ(a, logits_of(cfg, InferWeights::from_params(cfg, p, d), tok)) << weight_dtype_name(d);
    std::shared_ptr<const io::WeightSource> again = io::open_weights(tmp.dir().string());
    const std::string e = test::error_message([&] { InferWeights::load(cfg, again, WeightDType::kF32); });
    EXPECT_NE(e.find(std::string("stored as ") + weight_dtype_name(d)), std::string::npos) << e;
    const std::string f = test::error_message([&] { load_model(tmp.dir().string()); });
    EXPECT_NE(f.find("is quantised"), std::string::npos) << f;
  }
}

TEST(InferWeights, ShardLoadsOnlyItsExpertsAndTheDenseHashIgnoresThem) {
  const test::ScratchDir tmp("weight_shard");
  const ModelConfig cfg = small_config();  // 4 FFN experts per layer
  write_checkpoint(tmp.dir().string(), cfg, io::DType::kF32);
  std::shared_ptr<const io::WeightSource> src = io::open_weights(tmp.dir().string());
  const InferWeights all = InferWeights::load(cfg, *src, WeightDType::kInt8);
  const InferWeights s1 = InferWeights::load(cfg, *src, WeightDType::kInt8, {1, 2});
  const InferWeights s0 = InferWeights::load(cfg, src, WeightDType::kInt8, {0, 2});
  for (size_t l = 0; l < all.layers.size(); ++l) {
    EXPECT_EQ(s1.layers[l].ffn_first, 2);
    EXPECT_EQ(s1.layers[l].ffn_end, 4);
    for (int64_t e = 0; e < 4; ++e) {
      const bool mine = e >= 2;
      EXPECT_EQ(s1.layers[l].up[e].rows() != 0, mine);
      EXPECT_EQ(s1.layers[l].down[e].rows() != 0, mine);
      if (!mine) continue;
      std::vector<float> a(s1.layers[l].up[e].cols()), b(a.size());
      s1.layers[l].up[e].row_f32(3, a.data());
      all.layers[l].up[e].row_f32(3, b.data());
      EXPECT_EQ(a, b);
    }
  }
  EXPECT_LT(s1.bytes(), all.bytes());
  EXPECT_EQ(s0.dense_hash(), all.dense_hash());
  EXPECT_EQ(s1.dense_hash(), all.dense_hash());
  EXPECT_NE(InferWeights::load(cfg, *src, WeightDType::kF32).dense_hash(), all.dense_hash());  // dtype counts
  InferWeights changed = InferWeights::load(cfg, *src, WeightDType::kInt8);
  changed.layers[1].moe_small.const_v[0].data[5] += 1e-3f;
  EXPECT_NE(changed.dense_hash(), all.dense_hash());
  EXPECT_THROW(InferWeights::load(cfg, *src, WeightDType::kF32, {0, 3}), Error);  // 3 does not divide 4
}

}  // namespace
}  // namespace moepp
