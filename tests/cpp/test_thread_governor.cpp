// Unit tests of ThreadGovernor (src/infer/thread_governor): which thread count it picks for synthetic
// step times: quiet, a collapse at all threads, contention from the start, the cores' return, a change
// of row count in the middle of a try, and one thread (nothing to choose). And what the engine relies
// on to govern decode steps: a decode step gives the same bits with any thread count, here for a
// model of realistic width at every weight dtype.
#include <gtest/gtest.h>
#include <omp.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "infer/decoder.h"
#include "infer/infer_weights.h"
#include "infer/kv_cache.h"
#include "infer/thread_governor.h"
#include "model/model_config.h"
#include "model/model_params.h"

namespace moepp {
namespace {

// One step: the governor's count, then the time that count takes on the machine `t_of(threads)`.
template <typename TimeOf>
int step(ThreadGovernor& g, TimeOf t_of, int64_t rows = 1) {
  const int t = g.threads();
  g.record(t_of(t), rows);
  return t;
}

TEST(ThreadGovernor, QuietMachineStaysAtAllThreadsAfterOneEarlyTry) {
  ThreadGovernor g(2, 16);
  EXPECT_EQ(g.high(), 2);
  EXPECT_EQ(g.low(), 1);
  auto quiet = [](int t) { return t == 2 ? 3e-3 : 6e-3; };
  int low_steps = 0;
  for (int i = 0; i < 1000; ++i) low_steps += step(g, quiet) == 1;
  // the early try after kFirstTry steps, then one every kHighTryFactor x probe_every = 128 steps
  EXPECT_EQ(low_steps, 1 + (1000 - ThreadGovernor::kFirstTry - 1) / (ThreadGovernor::kHighTryFactor * 16));
  EXPECT_EQ(g.threads(), 2);
  EXPECT_EQ(g.switches(), 0);
}

TEST(ThreadGovernor, CollapseAtAllThreadsMovesToFewerAndBackWhenTheCoresReturn) {
  ThreadGovernor g(2, 16);
  auto quiet = [](int t) { return t == 2 ? 3e-3 : 6e-3; };
  auto busy = [](int t) { return t == 2 ? 100e-3 : 6.5e-3; };  // one core taken: 2 threads collapse
  for (int i = 0; i < 20; ++i) step(g, quiet);
  ASSERT_EQ(g.threads(), 2);
  // two slow steps, then the try of one thread, which is kept
  for (int i = 0; i < 3; ++i) step(g, busy);
  EXPECT_EQ(g.threads(), 1);
  EXPECT_EQ(g.switches(), 1);
  int high_steps = 0;
  for (int i = 0; i < 64; ++i) high_steps += step(g, busy) == 2;
  EXPECT_EQ(high_steps, 64 / 17);  // a try of 2 threads after every 16 steps at 1, each refused
  EXPECT_EQ(g.threads(), 1);
  // the core is free again: the next try of 2 threads is kept
  for (int i = 0; i < 17; ++i) step(g, quiet);
  EXPECT_EQ(g.threads(), 2);
  EXPECT_EQ(g.switches(), 2);
}

TEST(ThreadGovernor, ContentionFromTheStartIsFoundByTheEarlyTry) {
  ThreadGovernor g(4, 16);
  EXPECT_EQ(g.low(), 2);
  auto busy = [](int t) { return t == 4 ? 50e-3 : 4e-3; };  // no slowdown to see: always slow at 4
  for (int i = 0; i < ThreadGovernor::kFirstTry + 1; ++i) step(g, busy);
  EXPECT_EQ(g.threads(), 2);
  EXPECT_EQ(g.switches(), 1);
}

TEST(ThreadGovernor, AnotherRowCountDuringATryEndsIt) {
  ThreadGovernor g(2, 16);
  auto quiet = [](int t) { return t == 2 ? 3e-3 : 6e-3; };
  auto busy = [](int t) { return t == 2 ? 100e-3 : 6.5e-3; };
  for (int i = 0; i < 20; ++i) step(g, quiet);
  step(g, busy);
  step(g, busy);
  ASSERT_EQ(g.threads(), 1);  // the try is next
  // it runs a step of 3 rows (a second sequence joined): its time is not compared with 1-row steps
  g.record(0.5e-3, 3);
  EXPECT_EQ(g.threads(), 2);
  EXPECT_EQ(g.switches(), 0);
}

TEST(ThreadGovernor, OneThreadHasNothingToChooseAndBadArgumentsAreRefused) {
  ThreadGovernor g(1);
  for (int i = 0; i < 300; ++i) EXPECT_EQ(step(g, [i](int) { return i % 7 ? 1e-3 : 1.0; }), 1);
  EXPECT_THROW(ThreadGovernor(0), Error);
  EXPECT_THROW(ThreadGovernor(2, 0), Error);
}

// Greedy decoding of `steps` tokens after a 5-token prompt; threads(i) is the OpenMP thread count of
// decode step i. Returns every step's logits.
template <typename Threads>
std::vector<float> decode_logits(const Decoder& dec, int64_t steps, Threads threads) {
  const int saved = omp_get_max_threads();
  KvCache cache = dec.make_cache(1, 8 + steps);
  DecoderScratch sc;
  Tensor logits;
  const std::vector<int32_t> prompt = {3, 14, 15, 92, 65};
  dec.forward(logits, cache, {{0, prompt.data(), 5, false}}, sc);
  std::vector<float> all;
  for (int64_t i = 0; i < steps; ++i) {
    const int32_t next = static_cast<int32_t>(std::max_element(logits.data.begin(), logits.data.end()) - logits.data.begin());
    omp_set_num_threads(threads(i));
    dec.forward(logits, cache, {{0, &next, 1, false}}, sc);
    all.insert(all.end(), logits.data.begin(), logits.data.end());
  }
  omp_set_num_threads(saved);
  return all;
}

TEST(ThreadGovernor, DecodeStepsGiveTheSameBitsWithAnyThreadCount) {
  if (omp_get_max_threads() < 2) GTEST_SKIP() << "needs 2 OpenMP threads";
  const int high = omp_get_max_threads();
  // The benchmark model's width (D 1024, experts of 2816, 16 heads), 2 layers, a smaller vocabulary.
  const nlohmann::json j = {{"vocab_size", 2000}, {"hidden_size", 1024}, {"intermediate_size", 2816},
                            {"num_hidden_layers", 2}, {"num_attention_heads", 16}, {"num_key_value_heads", 16},
                            {"max_position_embeddings", 64}, {"num_experts", {12}}, {"moe_router", "moepp"},
                            {"n_zero_experts", 1}, {"n_copy_experts", 1}, {"n_constant_experts", 2},
                            {"moe_top_k", 2}};
  const ModelConfig cfg = ModelConfig::from_json(j, "wide");
  ModelParams p = ModelParams::zeros(cfg);
  p.init_random(cfg, 9, 0.05f);
  for (const WeightDType d : {WeightDType::kF32, WeightDType::kBF16, WeightDType::kInt8, WeightDType::kQ4}) {
    const Decoder dec(cfg, InferWeights::from_params(cfg, p, d));
    const std::vector<float> want = decode_logits(dec, 12, [high](int64_t) { return high; });
    const std::vector<float> one = decode_logits(dec, 12, [](int64_t) { return 1; });
    const std::vector<float> mixed = decode_logits(dec, 12, [high](int64_t i) { return i % 3 == 1 ? 1 : high; });
    ASSERT_EQ(want.size(), one.size());
    EXPECT_EQ(std::memcmp(want.data(), one.data(), want.size() * sizeof(float)), 0) << weight_dtype_name(d);
    EXPECT_EQ(std::memcmp(want.data(), mixed.data(), want.size() * sizeof(float)), 0) << weight_dtype_name(d);
  }
}

}  // namespace
}  // namespace moepp
