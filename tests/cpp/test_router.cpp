// Unit tests of the router kernels (src/moe/router) beyond the layer parity tests: the inference-only
// bias toward the zero-computation experts (MoeConfig::zc_bias, --zc-bias). 0 changes nothing; a
// positive bias keeps fewer FFN slots, a large one none, a large negative one every slot; the backward
// refuses a config with the bias.
#include <gtest/gtest.h>

#include <random>
#include <string>
#include <vector>

#include "core/error.h"
#include "moe/router.h"
#include "test_util.h"
#include "tiny_models.h"

namespace moepp {
namespace {

using namespace test;

// The FFN slots the router keeps for T tokens of logits z under cfg.
int64_t ffn_slots(const MoeConfig& cfg, const std::vector<float>& z, int64_t T) {
  const int64_t E = cfg.n_experts, W = cfg.slot_width();
  std::vector<int32_t> ids(T * W);
  std::vector<float> w(T * W), s(T * E), p(T * E), sigma(T), norm(T);
  std::vector<uint8_t> kept(T * W);
  router_select_forward(ids.data(), w.data(), kept.data(), s.data(), p.data(), sigma.data(), norm.data(), z.data(),
                        cfg, T);
  int64_t n = 0;
  for (int64_t i = 0; i < T * W; ++i) n += kept[i] && ids[i] >= 0 && ids[i] < cfg.n_ffn();
  return n;
}

TEST(RouterSelectForward, ZcBiasShiftsSlotsToTheZeroComputationExperts) {
  MoeConfig cfg = small_moe_config(RouterKind::kMoepp);
  cfg.training = false;
  const int64_t T = 64, E = cfg.n_experts;
  std::mt19937 rng(4);
  std::normal_distribution<float> n01;
  std::vector<float> z(T * E);
  for (float& v : z) v = n01(rng);
  const int64_t base = ffn_slots(cfg, z, T);
  ASSERT_GT(base, 0);
  ASSERT_LT(base, T * cfg.top_k);
  cfg.zc_bias = 0.0f;
  EXPECT_EQ(ffn_slots(cfg, z, T), base);
  cfg.zc_bias = 1.0f;
  const int64_t more_zc = ffn_slots(cfg, z, T);
  EXPECT_LT(more_zc, base);
  cfg.zc_bias = 50.0f;
  EXPECT_EQ(ffn_slots(cfg, z, T), 0);
  cfg.zc_bias = -50.0f;
  EXPECT_EQ(ffn_slots(cfg, z, T), T * cfg.top_k);
}

TEST(RouterBackward, RefusesTheInferenceOnlyZcBias) {
  MoeConfig mc = small_moe_config(RouterKind::kMoepp);
  mc.zc_bias = 1.0f;
  const std::string e = error_message([&] {
    MoeParams g;
    router_backward(nullptr, nullptr, g, nullptr, nullptr, nullptr, nullptr, RouterActivations{}, SlotsView{},
                    nullptr, nullptr, g, mc, 0);
  });
  EXPECT_NE(e.find("inference only"), std::string::npos) << e;
}

}  // namespace
}  // namespace moepp
