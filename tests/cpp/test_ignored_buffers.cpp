// Unit tests of model/ignored_buffers.h: exactly the rotary-embedding buffers of LLaMA-family
// checkpoints are skipped (with one notice), every other unknown tensor is an error, and the inference
// loader gives the same logits with and without the buffers.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "core/error.h"
#include "infer/decoder.h"
#include "infer/infer_weights.h"
#include "model/checkpoint.h"
#include "io/safetensors.h"
#include "io/weight_source.h"
#include "model/ignored_buffers.h"
#include "test_util.h"

namespace moepp {
namespace {

TEST(IgnoredBuffers, MatchExactlyTheRotaryBuffersOfADecoderLayer) {
  for (const char* n : {"model.layers.0.self_attn.rotary_emb.inv_freq", "model.layers.31.self_attn.rotary_emb.cos_cached",
                        "model.layers.7.self_attn.rotary_emb.sin_cached"})
    EXPECT_TRUE(is_ignored_rotary_buffer(n)) << n;
  for (const char* n : {"model.layers.0.self_attn.rotary_emb.inv_freqs", "model.layers..self_attn.rotary_emb.inv_freq",
                        "model.layers.x.self_attn.rotary_emb.inv_freq", "model.layers.0.self_attn.rotary_emb.",
                        "model.layers.0.mlp.rotary_emb.inv_freq", "model.rotary_emb.inv_freq",
                        "layers.0.self_attn.rotary_emb.inv_freq", "model.layers.0.self_attn.q_proj.weight", ""})
    EXPECT_FALSE(is_ignored_rotary_buffer(n)) << n;
}

TEST(IgnoredBuffers, AnyOtherUnknownTensorIsAnErrorNamingSourceAndTensor) {
  const std::set<std::string> expected = {"a", "b"};
  EXPECT_NO_THROW(check_no_unexpected_tensors({"a", "model.layers.2.self_attn.rotary_emb.inv_freq", "b"}, expected, "f"));
  try {
    check_no_unexpected_tensors({"a", "model.layers.2.self_attn.rotary_emb.inv_freq", "c"}, expected, "W.bin");
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("W.bin: unexpected tensor 'c'"), std::string::npos) << e.what();
  }
}

TEST(IgnoredBuffers, InferenceLoaderSkipsThemWithTheSameLogits) {
  const nlohmann::json j = {{"vocab_size", 41},      {"hidden_size", 16},         {"intermediate_size", 12},
                            {"num_hidden_layers", 2}, {"num_attention_heads", 2}, {"max_position_embeddings", 32},
                            {"num_experts", {6}}};
  const ModelConfig cfg = ModelConfig::from_json(j, "test");
  ModelParams p = ModelParams::zeros(cfg);
  p.init_random(cfg, 4, 0.2f);
  const test::ScratchDir tmp("ignored_buffers");
  const std::string clean = (tmp.dir() / "clean").string(), extra = (tmp.dir() / "extra").string();
  save_model(clean, cfg, p);
  save_model(extra, cfg, p);
  io::SafetensorsWriter w;
  for (const auto& [name, t] : p.named(cfg)) w.add_f32(name, *t);
  for (int l = 0; l < 2; ++l)
    w.add_f32("model.layers." + std::to_string(l) + ".self_attn.rotary_emb.inv_freq", Tensor(std::vector<int64_t>{4}));
  w.write(extra + "/model.safetensors");

  const std::vector<int32_t> tok = test::random_tokens(9, cfg.vocab, 2);
  std::vector<std::vector<float>> out;
  for (const std::string& dir : {clean, extra}) {
    const Decoder dec(cfg, InferWeights::load(cfg, *io::open_weights(dir), WeightDType::kF32));
    KvCache cache = dec.make_cache(1, 32);
    DecoderScratch sc;
    Tensor logits;
    dec.forward(logits, cache, {{0, tok.data(), static_cast<int64_t>(tok.size()), true}}, sc);
    out.push_back(logits.data);
  }
  EXPECT_EQ(out[0], out[1]);
  EXPECT_EQ(load_model(extra).second.named(cfg).size(), p.named(cfg).size());
}

}  // namespace
}  // namespace moepp
