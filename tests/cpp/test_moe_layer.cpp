// Unit tests of the MoE++ layer (src/moe/moe_layer): directional finite-difference checks of the
// backward for every router variant, and the properties the method promises (zero-expert partner
// weight 1, no FFN work for zero-computation tokens). Bit-level parity with PyTorch is in tests/python.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <string>
#include <utility>

#include "moe/moe_layer.h"
#include "tiny_models.h"

namespace moepp {
namespace {

using test::small_moe_config;

// The setting of the layer-property tests: the MoE++ router in inference at layer 0 (so no gating
// residual), with random parameters (seed 3, std 0.5).
struct InferenceLayer {
  MoeConfig c;
  MoeLayer layer;
  MoeParams p;
};
InferenceLayer moepp_inference_layer0() {
  MoeConfig c = small_moe_config(RouterKind::kMoepp);
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

class MoeLayerGradient : public ::testing::TestWithParam<RouterKind> {};

TEST_P(MoeLayerGradient, DirectionalDerivativesMatchFiniteDifferences) {
  MoeConfig c = small_moe_config(GetParam());
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

INSTANTIATE_TEST_SUITE_P(Routers, MoeLayerGradient,
                         ::testing::Values(RouterKind::kMoepp, RouterKind::kTopK, RouterKind::kAdaMoe, RouterKind::kRelu),
                         [](const auto& info) { return std::string(router_name(info.param)); });

TEST(MoeLayer, ZeroExpertGivesPartnerWeightOne) {
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

TEST(MoeLayer, ZeroComputationTokensDoNoFfnWork) {
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

}  // namespace
}  // namespace moepp
