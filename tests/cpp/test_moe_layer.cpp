// Unit tests of the MoE++ layer: directional finite-difference checks of the backward for every router
// variant, and the properties the method promises (zero-expert partner weight 1, no FFN work for
// zero-computation tokens, capacity drops). Bit-level parity with PyTorch is in tests/python.
#include <gtest/gtest.h>

#include <cmath>
#include <nlohmann/json.hpp>
#include <random>
#include <utility>

#include "core/error.h"
#include "moe/dispatch.h"
#include "moe/moe_layer.h"

namespace moepp {
namespace {

MoeConfig small_config(RouterKind r) {
  MoeConfig c;
  c.hidden = 12;
  c.intermediate = 10;
  c.router = r;
  c.n_zero = r == RouterKind::kMoepp || r == RouterKind::kAdaMoe ? 1 : 0;
  c.n_copy = r == RouterKind::kMoepp ? 1 : 0;
  c.n_constant = r == RouterKind::kMoepp ? 2 : 0;
  c.n_experts = 4 + c.n_zc();
  c.gating_residual = r == RouterKind::kMoepp;
  c.layer_index = 1;
  c.training = true;
  c.aux_loss_coef = 0.1f;
  c.relu_l1_coef = 0.05f;
  c.two_layer_gate = false;  // the 7B checkpoint's router flags
  c.logits_norm = true;
  c.no_mul_topk = true;
  return c;
}

// The setting of the layer-property tests: the MoE++ router in inference at layer 0 (so no gating
// residual), with random parameters (seed 3, std 0.5).
struct InferenceLayer {
  MoeConfig c;
  MoeLayer layer;
  MoeParams p;
};
InferenceLayer moepp_inference_layer0() {
  MoeConfig c = small_config(RouterKind::kMoepp);
  c.training = false;
  c.layer_index = 0;
  MoeParams p = MoeParams::zeros(c);
  p.init_random(c, 3, 0.5f);
  return {c, MoeLayer(c), std::move(p)};
}

Tensor randn(std::vector<int64_t> shape, std::mt19937& rng, float scale = 1.0f) {
  Tensor t(std::move(shape));
  std::normal_distribution<float> n01;
  for (float& v : t.data) v = scale * n01(rng);
  return t;
}

struct Objective {
  const MoeLayer& layer;
  const MoeParams& params;
  Tensor dy, dz;
  double operator()(const Tensor& x, const Tensor* zp) const {
    MoeForwardState st;
    Tensor y, z;
    layer.forward(y, z, st, x, zp, params);
    double l = st.aux_loss;
    for (size_t i = 0; i < y.numel(); ++i) l += static_cast<double>(y.data[i]) * dy.data[i];
    for (size_t i = 0; i < z.numel(); ++i) l += static_cast<double>(z.data[i]) * dz.data[i];
    return l;
  }
};

class LayerGradient : public ::testing::TestWithParam<RouterKind> {};

TEST_P(LayerGradient, DirectionalDerivativesMatchFiniteDifferences) {
  MoeConfig c = small_config(GetParam());
  const MoeLayer layer(c);
  std::mt19937 rng(11);
  MoeParams p = MoeParams::zeros(c);
  p.init_random(c, 5, 0.3f);
  const int64_t T = 9;
  Tensor x = randn({T, c.hidden}, rng), zp = randn({T, c.n_experts}, rng);
  Objective f{layer, p, randn({T, c.hidden}, rng), randn({T, c.n_experts}, rng)};

  MoeForwardState st;
  MoeBackwardScratch sc;
  Tensor y, z, dx, dzp;
  layer.forward(y, z, st, x, &zp, p);
  MoeParams g = MoeParams::zeros(c);
  layer.backward(dx, &dzp, g, sc, f.dy, &f.dz, st, p);

  const double eps = 1e-3;
  auto check_dir = [&](Tensor& target, const Tensor& grad, const std::string& what) {
    Tensor v = randn(target.shape, rng);
    double analytic = 0.0;
    for (size_t i = 0; i < v.numel(); ++i) analytic += static_cast<double>(grad.data[i]) * v.data[i];
    Tensor saved = target;
    for (size_t i = 0; i < v.numel(); ++i) target.data[i] = saved.data[i] + eps * v.data[i];
    const double lp = f(x, &zp);
    for (size_t i = 0; i < v.numel(); ++i) target.data[i] = saved.data[i] - eps * v.data[i];
    const double lm = f(x, &zp);
    target = saved;
    const double numeric = (lp - lm) / (2 * eps);
    EXPECT_NEAR(analytic, numeric, 2e-2 * std::max(1.0, std::abs(numeric))) << what;
  };
  check_dir(x, dx, "x");
  check_dir(zp, dzp, "z_prev");
  auto named_p = p.named(c);
  auto named_g = g.named(c);
  for (size_t i = 0; i < named_p.size(); ++i) check_dir(*named_p[i].second, *named_g[i].second, named_p[i].first);
}

INSTANTIATE_TEST_SUITE_P(Routers, LayerGradient,
                         ::testing::Values(RouterKind::kMoepp, RouterKind::kTopK, RouterKind::kAdaMoe, RouterKind::kRelu),
                         [](const auto& info) { return std::string(router_name(info.param)); });

TEST(LayerProperties, ZeroExpertGivesPartnerWeightOne) {
  const auto [c, layer, p] = moepp_inference_layer0();
  std::mt19937 rng(2);
  Tensor x = randn({64, c.hidden}, rng);
  MoeForwardState st;
  Tensor y, z;
  layer.forward(y, z, st, x, nullptr, p);
  int with_zero = 0;
  for (int64_t t = 0; t < 64; ++t)
    for (int k = 0; k < 2; ++k)
      if (st.ids[t * 2 + k] == c.n_experts - 1) {
        ++with_zero;
        EXPECT_EQ(st.w[t * 2 + k], 0.0f);
        EXPECT_EQ(st.w[t * 2 + (1 - k)], 1.0f);  // exactly
      }
  EXPECT_GT(with_zero, 0) << "the test data never selected the zero expert";
}

TEST(LayerProperties, ZeroComputationTokensDoNoFfnWork) {
  auto [c, layer, p] = moepp_inference_layer0();
  // Feature 0 is a bias: huge for the zero-computation experts in tokens 0..7, absent for 8..15.
  for (int64_t e = c.n_ffn(); e < c.n_experts; ++e) p.wg.data[e * c.hidden] = 50.0f;
  std::mt19937 rng(4);
  Tensor x = randn({16, c.hidden}, rng, 0.1f);
  for (int64_t t = 0; t < 16; ++t) x.data[t * c.hidden] = t < 8 ? 1.0f : 0.0f;
  MoeForwardState st;
  Tensor y, z;
  layer.forward(y, z, st, x, nullptr, p);
  int64_t ffn_slots_of_zc_tokens = 0, expected_rows = 0;
  for (int64_t t = 0; t < 16; ++t)
    for (int k = 0; k < 2; ++k) {
      const bool ffn = st.ids[t * 2 + k] < c.n_ffn();
      if (t < 8) ffn_slots_of_zc_tokens += ffn;
      expected_rows += ffn;
    }
  EXPECT_EQ(ffn_slots_of_zc_tokens, 0);
  EXPECT_EQ(st.ffn_rows(), expected_rows);  // FLOPs = 6 D I per row: only FFN slots reach the GEMMs
  EXPECT_LE(st.ffn_rows(), 16);
  EXPECT_EQ(st.zc_slots, 32 - st.ffn_rows());
}

TEST(LayerProperties, CapacityDropsByRankThenToken) {
  MoeConfig c;
  c.hidden = 4;
  c.intermediate = 4;
  c.router = RouterKind::kTopK;
  c.n_experts = 4;
  c.n_zero = c.n_copy = c.n_constant = 0;
  c.gating_residual = false;
  c.two_layer_gate = false;
  c.logits_norm = true;
  c.no_mul_topk = true;
  c.training = true;
  c.capacity_factor = 0.5;  // C = ceil(0.5 * 2 * 4 / 4) = 1 slot per expert
  // token: (first, second) choice
  const std::vector<int32_t> ids = {0, 1, 0, 2, 1, 0, 3, 0};
  std::vector<uint8_t> kept(8, 1);
  std::vector<int64_t> offset(5);
  std::vector<int32_t> slot(8), row_of_slot(8);
  const std::vector<int64_t> cap = expert_capacity(c, 4);
  const DispatchCounts n = dispatch_slots(kept.data(), offset.data(), slot.data(), row_of_slot.data(), ids.data(),
                                          cap.data(), nullptr, c, 4);
  // Rank 0 in token order: t0->0 kept, t1->0 dropped, t2->1 kept, t3->3 kept.
  // Rank 1: t0->1 dropped (1 full), t1->2 kept, t2->0 dropped, t3->0 dropped.
  const std::vector<uint8_t> want = {1, 0, 0, 1, 1, 0, 1, 0};
  EXPECT_EQ(kept, want);
  EXPECT_EQ(n.dropped_slots, 4);
  EXPECT_EQ(offset[4], 4);
  EXPECT_EQ(expert_capacity(c, 4), std::vector<int64_t>(4, 1));
}

TEST(LayerProperties, MoeppCapacityPerType) {
  MoeConfig c = small_config(RouterKind::kMoepp);  // 4 FFN + 4 ZC, tau 0.75
  c.capacity_factor = 1.1;
  // slots S = 2 * 100; C_FFN = ceil(1.1 * 0.75 * 200 / (0.75 * 4 + 4)) = ceil(23.57) = 24; C_ZC = ceil(31.43) = 32
  const auto cap = expert_capacity(c, 100);
  EXPECT_EQ(cap[0], 24);
  EXPECT_EQ(cap[4], 32);
  c.training = false;  // inference is dropless
  EXPECT_EQ(expert_capacity(c, 100)[0], -1);
}

TEST(LayerConfig, BadValuesNameTheField) {
  auto expect_error = [](const char* text, const std::string& needle) {
    try {
      MoeConfig::from_json(nlohmann::json::parse(text), "C.json");
      ADD_FAILURE() << "no error for " << text;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  };
  expect_error(R"({"intermediate_size": 8, "num_experts": [8]})", "hidden_size");
  expect_error(R"({"hidden_size": 8, "intermediate_size": 8, "num_experts": [8], "moe_top_k": "2"})", "moe_top_k");
  expect_error(R"({"hidden_size": 8, "intermediate_size": 8, "num_experts": [8], "moe_topk": 2})", "moe_topk");
  expect_error(R"({"hidden_size": 8, "intermediate_size": 8, "num_experts": [4]})", "num_experts");
  expect_error(R"({"hidden_size": 8, "intermediate_size": 8, "num_experts": [8], "moe_top_k": 9})", "moe_top_k");
  expect_error(R"({"hidden_size": 8, "intermediate_size": 8, "num_experts": [8], "moe_router": "x"})", "moe_router");
  expect_error(R"({"hidden_size": 8, "intermediate_size": 8, "num_experts": [8], "moe_tau": 0})", "moe_tau");
  expect_error(R"({"hidden_size": 8, "intermediate_size": 8, "num_experts": [8], "moe_router": "relu", "moe_capacity_factor": 1.0})", "moe_capacity_factor");
  const MoeConfig c = MoeConfig::from_json(nlohmann::json::parse(R"({"hidden_size": 8, "intermediate_size": 16, "num_experts": [20]})"), "C.json");
  EXPECT_EQ(c.n_ffn(), 16);
  EXPECT_EQ(c.first_zero(), 19);
  EXPECT_EQ(c.kind(16), ExpertKind::kConstant);
  EXPECT_EQ(c.kind(18), ExpertKind::kCopy);
  EXPECT_TRUE(c.gating_residual);
}

TEST(LayerConfig, MissingRouterKeysTakeTheReleasedConfigDefaults) {
  // configuration_moe_plus_plus.py: moe_2layer_gate=True, moe_use_logits_norm=False,
  // moe_gate_norm_std=1.0, moe_use_mixtral_gating=False, moe_feature_no_mul_topk=False.
  const MoeConfig c = MoeConfig::from_json(
      nlohmann::json::parse(R"({"hidden_size": 8, "intermediate_size": 16, "num_experts": [12]})"), "C.json");
  EXPECT_TRUE(c.two_layer_gate);
  EXPECT_FALSE(c.logits_norm);
  EXPECT_EQ(c.gate_norm_std, 1.0f);
  EXPECT_FALSE(c.mixtral_gating);
  EXPECT_FALSE(c.no_mul_topk);
  EXPECT_TRUE(c.scales_input());
  EXPECT_EQ(c.input_scale(), 2.0f);
  // moepp's extension keys keep moepp's defaults.
  EXPECT_EQ(c.top_k, 2);
  EXPECT_EQ(c.router, RouterKind::kMoepp);
  EXPECT_TRUE(c.gating_residual);
  EXPECT_EQ(c.tau, 0.75);
  EXPECT_FALSE(c.capacity_factor.has_value());
}

TEST(LayerConfig, InputIsScaledByKOnlyWithoutMixtralGatingAndWithoutNoMulTopk) {
  MoeConfig c = small_config(RouterKind::kMoepp);
  c.top_k = 3;
  for (bool mixtral : {false, true})
    for (bool no_mul : {false, true}) {
      c.mixtral_gating = mixtral;
      c.no_mul_topk = no_mul;
      EXPECT_EQ(c.scales_input(), !mixtral && !no_mul) << mixtral << no_mul;
      EXPECT_EQ(c.input_scale(), !mixtral && !no_mul ? 3.0f : 1.0f) << mixtral << no_mul;
    }
}

}  // namespace
}  // namespace moepp
