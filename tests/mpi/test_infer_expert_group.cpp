// Expert-parallel inference (np 1, 2, 4): the decoder with its FFN experts split over the ranks
// (infer/expert_group_ffn.h), led by rank 0 and followed by the others (infer/decoder_followers.h),
// against the single-process decoder on rank 0: the logits and router logits of every call bit for
// bit, for a mixed prefill + decode batch in F32, BF16 and INT8 and with one FFN expert per rank;
// slots cleared, truncated or copied and a cache replaced by one of other dimensions are mirrored by
// the followers; the agreement check names the rank that differs.
#include <gtest/gtest.h>

#include <cstring>
#include <memory>
#include <ostream>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <vector>

#include "comm/agreement.h"
#include "comm/comm.h"
#include "core/error.h"
#include "infer/decoder.h"
#include "infer/decoder_followers.h"
#include "infer/infer_weights.h"
#include "model/model_params.h"
#include "mpi_test_env.h"

namespace moepp {
namespace {

ModelConfig config(int64_t n_ffn) {
  // MoE++ defaults: 1 zero, 1 copy and 2 constant experts besides the FFN experts.
  const nlohmann::json j = {{"vocab_size", 47},         {"hidden_size", 32},        {"intermediate_size", 24},
                            {"num_hidden_layers", 3},   {"num_attention_heads", 4}, {"num_key_value_heads", 2},
                            {"max_position_embeddings", 64}, {"num_experts", {n_ffn + 4}}, {"moe_router", "moepp"}};
  return ModelConfig::from_json(j, "test");
}

bool same_bits(const Tensor& a, const Tensor& b) {
  return a.shape == b.shape && std::memcmp(a.ptr(), b.ptr(), sizeof(float) * a.numel()) == 0;
}

// A scripted sequence of decoder calls on one cache. Rank 0 runs it on the group's decoder (followers
// mirror it) and on the single-process decoder, comparing every call's outputs.
struct Script {
  std::vector<int32_t> tokens;  // a pool the calls take their tokens from
  explicit Script(uint64_t seed, int32_t vocab) {
    std::mt19937 rng(static_cast<uint32_t>(seed));
    tokens.resize(64);
    for (int32_t& t : tokens) t = static_cast<int32_t>(rng() % vocab);
  }
  // Runs the calls on dec with `run` (rank 0 of a group, or one process); `check` gets each call's
  // outputs. Returns the forward calls made.
  template <class Check>
  int run(const Decoder& dec, bool resets, Check check) const {
    KvCache cache = dec.make_cache(3, 40);
    DecoderScratch sc;
    Tensor logits;
    std::vector<Tensor> router;
    int calls = 0;
    auto call = [&](std::vector<DecodeChunk> batch, bool want_router) {
      dec.forward(logits, cache, batch, sc, want_router ? &router : nullptr);
      check(calls++, logits, want_router ? &router : nullptr);
    };
    const int32_t* t = tokens.data();
    call({{0, t, 7, false}, {1, t + 7, 5, true}}, true);                  // two prefills
    call({{0, t + 12, 1, false}, {2, t + 13, 6, true}, {1, t + 19, 1, false}}, true);  // decode + prefill + decode
    call({{1, t + 20, 1, false}, {0, t + 21, 1, false}}, false);           // decode only
    if (resets) {
      cache.clear(1);                        // a finished request's slot reused
      cache.set_length(0, 3);                // a truncation (eval mc's shared context)
      call({{1, t + 22, 9, true}, {0, t + 31, 2, true}}, true);
      call({{2, t + 33, 1, false}, {1, t + 34, 1, false}, {0, t + 35, 1, false}}, false);
      dec.copy_cache_slot(cache, 2, 1);      // a shared context copied (eval mc)
      call({{2, t + 35, 2, true}, {1, t + 37, 1, false}}, true);
      cache = dec.make_cache(2, 24);         // another cache, other dimensions
      call({{1, t + 36, 4, true}}, true);
      cache.clear(1);
      call({{0, t + 40, 3, false}, {1, t + 43, 2, false}}, true);
    }
    return calls;
  }
};

struct GroupCase {
  std::string name;
  WeightDType dtype;
  int64_t ffn_per_rank;  // 0: 8 FFN experts in all
  bool resets;
};

void PrintTo(const GroupCase& c, std::ostream* os) { *os << c.name; }

class DecoderExpertGroup : public ::testing::TestWithParam<GroupCase> {};

TEST_P(DecoderExpertGroup, EqualsOneProcessBitForBit) {
  const GroupCase& c = GetParam();
  Comm& world = world_comm();
  const int P = world.size(), me = world.rank();
  const ModelConfig cfg = config(c.ffn_per_rank > 0 ? c.ffn_per_rank * P : 8);
  if (cfg.moe.n_ffn() % P != 0) GTEST_SKIP();
  ModelParams p = ModelParams::zeros(cfg);
  p.init_random(cfg, 11, 0.3f);
  const Script script(5, static_cast<int32_t>(cfg.vocab));
  std::unique_ptr<Comm> group = world.split(0, me);

  const Decoder dec(cfg, InferWeights::from_params(cfg, p, c.dtype, {group->rank(), group->size()}), group.get());
  // Only this rank's experts were converted.
  for (const auto& l : dec.weights().layers)
    for (int64_t e = 0; e < cfg.moe.n_ffn(); ++e) {
      const bool mine = e >= l.ffn_first && e < l.ffn_end;
      EXPECT_EQ(l.up[e].rows() != 0, mine) << "expert " << e;
    }
  int64_t calls = 0;
  if (me != 0) {
    calls = follow_decoder(dec);
  } else {
    const Decoder ref(cfg, InferWeights::from_params(cfg, p, c.dtype));
    std::vector<Tensor> ref_logits;
    std::vector<std::vector<Tensor>> ref_router;
    script.run(ref, c.resets, [&](int, const Tensor& l, const std::vector<Tensor>* r) {
      ref_logits.push_back(l);
      ref_router.push_back(r ? *r : std::vector<Tensor>{});
    });
    FollowerRelease release(dec);
    calls = script.run(dec, c.resets, [&](int i, const Tensor& l, const std::vector<Tensor>* r) {
      EXPECT_TRUE(same_bits(l, ref_logits[i])) << "logits of call " << i;
      if (r == nullptr) return;
      for (size_t k = 0; k < r->size(); ++k)
        EXPECT_TRUE(same_bits((*r)[k], ref_router[i][k])) << "router logits of call " << i << " layer " << k;
    });
    release.stop();
  }
  // Every rank ran every call, and exchanged the same rows.
  int64_t leader_calls = calls;
  group->broadcast(&leader_calls, sizeof leader_calls, 0);
  EXPECT_EQ(calls, leader_calls);
  uint64_t rows = 0, bytes = 0;
  for (const ExpertGroupStats& s : dec.expert_group_stats()) {
    rows += s.rows;
    bytes += s.bytes;
  }
  EXPECT_GT(rows, 0u);
  EXPECT_EQ(bytes, rows * cfg.hidden * sizeof(float));
  int64_t mine_rows = static_cast<int64_t>(rows);
  std::vector<int64_t> each(P);
  group->allgather(each.data(), &mine_rows, 1);
  for (int r = 0; r < P; ++r) EXPECT_EQ(each[r], each[0]) << "rank " << r;
}

INSTANTIATE_TEST_SUITE_P(
    Cases, DecoderExpertGroup,
    ::testing::Values(GroupCase{"f32_mixed_batch", WeightDType::kF32, 0, false},
                      GroupCase{"bf16_mixed_batch", WeightDType::kBF16, 0, false},
                      GroupCase{"int8_mixed_batch", WeightDType::kInt8, 0, false},
                      GroupCase{"f32_one_expert_per_rank", WeightDType::kF32, 1, false},
                      GroupCase{"f32_cache_resets", WeightDType::kF32, 0, true},
                      GroupCase{"int8_one_expert_per_rank_cache_resets", WeightDType::kInt8, 1, true}),
    [](const ::testing::TestParamInfo<GroupCase>& i) { return i.param.name; });

TEST(DecoderExpertGroupChecks, ShardMustMatchTheGroup) {
  Comm& world = world_comm();
  const ModelConfig cfg = config(8);
  ModelParams p = ModelParams::zeros(cfg);
  std::unique_ptr<Comm> group = world.split(0, world.rank());
  if (world.size() > 1) {
    // The weights of every expert given to a group of several ranks.
    EXPECT_THROW(Decoder(cfg, InferWeights::from_params(cfg, p, WeightDType::kF32), group.get()), Error);
  }
  // A shard count that does not divide the FFN experts.
  EXPECT_THROW(InferWeights::from_params(cfg, p, WeightDType::kF32, {0, 3}), Error);
}

TEST(AgreementCheck, NamesTheRanksThatDiffer) {
  Comm& world = world_comm();
  check_same_on_every_rank(world, 42, "same everywhere");  // no throw
  if (world.size() < 2) return;
  try {
    check_same_on_every_rank(world, world.rank() == 1 ? 7 : 42, "the config");
    ADD_FAILURE() << "no error";
  } catch (const JobWideError& e) {
    EXPECT_NE(std::string(e.what()).find("the config differs between ranks: rank 1 differs from rank 0"),
              std::string::npos)
        << e.what();
  }
}

}  // namespace
}  // namespace moepp
