// Tests of src/gpu/gpu_moe_layer on a GPU against the CPU layer (moe/moe_layer.h), same config and
// parameters: forward (output, router logits, slots, balance loss) and every gradient, in F32 within
// 1e-5 of max(1, max|cpu|) and in BF16 within the bound of docs/gpu.md. Configs: the moepp router with
// every zero-computation kind, the gating residual, the two-layer gate, K·x input scaling, mixtral
// gating, topk and adamoe routers, capacity drops, a token count that is not a multiple of any block
// size, one token, and no FFN rows at all. Built in the full build only (it needs the CPU layer).
#include "gpu/gpu_moe_layer.h"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "gpu_test_util.h"
#include "moe/moe_layer.h"

namespace moepp::gpu {
namespace {

constexpr double kF32Bound = 1e-5;
constexpr double kBF16Bound = 3e-2;  // docs/gpu.md: 8 roundings of 2^-8 relative, of the tensor's scale

struct Case {
  std::string name;
  nlohmann::json cfg;
  int64_t T;
  bool all_zc = false;  // route every token to the zero-computation experts (no FFN rows)
};

nlohmann::json base(int64_t E = 8) {
  return {{"hidden_size", 32}, {"intermediate_size", 24}, {"num_experts", E}, {"moe_2layer_gate", false},
          {"moe_use_logits_norm", true}, {"moe_feature_no_mul_topk", true}};
}

nlohmann::json with(nlohmann::json j, const nlohmann::json& extra) {
  for (auto it = extra.begin(); it != extra.end(); ++it) j[it.key()] = it.value();
  return j;
}

std::vector<Case> cases() {
  return {
      {"moepp_default", base(), 37},
      {"moepp_T1", base(), 1},
      {"moepp_zc_1_1_6_T300", with(base(12), {{"n_zero_experts", 1}, {"n_copy_experts", 1}, {"n_constant_experts", 6}}), 300},
      {"moepp_residual_2layer_mulK", with(base(), {{"layer_index", 1}, {"moe_2layer_gate", true},
                                                   {"moe_feature_no_mul_topk", false}}), 53},
      {"moepp_mixtral_K3_residual", with(base(), {{"moe_use_mixtral_gating", true}, {"moe_top_k", 3}, {"layer_index", 2}}), 41},
      {"moepp_no_logits_norm", with(base(), {{"moe_use_logits_norm", false}}), 29},
      {"moepp_gate_norm_std_2.5_2layer", with(base(), {{"moe_gate_norm_std", 2.5}, {"moe_2layer_gate", true}}), 31},
      {"moepp_train_capacity", with(base(), {{"training", true}, {"moe_capacity_factor", 0.7}, {"moe_aux_loss_coef", 1.0},
                                             {"layer_index", 1}}), 64},
      {"moepp_train_dropless_tau", with(base(), {{"training", true}, {"moe_tau", 0.25}, {"moe_aux_loss_coef", 0.5}}), 45},
      {"topk_train_capacity", with(base(), {{"moe_router", "topk"}, {"training", true}, {"moe_capacity_factor", 0.9},
                                            {"moe_aux_loss_coef", 1.0}}), 70},
      {"topk_mixtral", with(base(), {{"moe_router", "topk"}, {"moe_use_mixtral_gating", true}}), 33},
      {"adamoe_train", with(base(), {{"moe_router", "adamoe"}, {"n_zero_experts", 2}, {"moe_top_k", 3}, {"training", true},
                                     {"moe_aux_loss_coef", 1.0}}), 40},
      {"moepp_no_ffn_rows", base(), 17, true},
  };
}

// Router weights that send every token to the zero-computation experts (distinct logits, no ties).
void route_all_to_zc(MoeParams& p, Tensor& x, const MoeConfig& c) {
  for (float& v : x.data) v = std::fabs(v) + 0.1f;
  for (int64_t e = 0; e < c.n_experts; ++e)
    for (int64_t j = 0; j < c.hidden; ++j)
      p.wg.data[e * c.hidden + j] = e < c.n_ffn() ? -1.0f : 0.2f * static_cast<float>(e - c.n_ffn() + 1);
}

void expect_close(const std::vector<float>& got, const std::vector<float>& want, double bound, const std::string& what) {
  EXPECT_LE(test::rel_error(got, want), bound) << what;
}

void run_case(const Case& k, Precision prec, GroupedGemmMode mode) {
  const MoeConfig c = MoeConfig::from_json(k.cfg, k.name);
  const int64_t T = k.T, D = c.hidden, E = c.n_experts, K = c.slot_width();
  MoeParams params = MoeParams::zeros(c);
  params.init_random(c, 11, 0.2f);
  Tensor x({T, D}), zp({T, E}), dy({T, D}), dzo({T, E});
  x.data = test::randn(T * D, 1);
  zp.data = test::randn(T * E, 2);
  dy.data = test::randn(T * D, 3);
  dzo.data = test::randn(T * E, 4);
  if (k.all_zc) route_all_to_zc(params, x, c);
  const double bound = prec == Precision::kF32 ? kF32Bound : kBF16Bound;
  const std::string tag = k.name + " " + precision_name(prec) + " " + grouped_gemm_mode_name(mode);

  // CPU
  MoeLayer cpu(c);
  MoeForwardState st;
  Tensor y, z, dx, dzp;
  cpu.forward(y, z, st, x, c.uses_residual() ? &zp : nullptr, params);
  MoeParams grads = MoeParams::zeros(c);
  MoeBackwardScratch sc;
  cpu.backward(dx, c.uses_residual() ? &dzp : nullptr, grads, sc, dy, &dzo, st, params);

  // GPU
  GpuContext ctx;
  GpuMoeLayer gpu(c, {prec, mode});
  const GpuMoeParams gp = GpuMoeParams::upload(params, c, prec, ctx.s());
  GpuMoeParams gg = GpuMoeParams::zeros(c, ctx.s());
  DeviceBuffer<float> gx, gzp, gdy, gdzo, gy(T * D), gdx(T * D), gdzp(T * E);
  upload(gx, x.data, ctx.s());
  upload(gzp, zp.data, ctx.s());
  upload(gdy, dy.data, ctx.s());
  upload(gdzo, dzo.data, ctx.s());
  GpuMoeState gst;
  gpu.forward(gy.get(), gst, gx.get(), gzp.get(), gp, T, ctx);
  GpuMoeScratch gsc;
  gpu.backward(gdx.get(), gdzp.get(), gg, gsc, gdy.get(), gdzo.get(), gst, gp, ctx);

  const std::vector<int32_t> ids = download(gst.ids.get(), T * K, ctx.s());
  EXPECT_EQ(ids, st.ids) << tag;
  const std::vector<uint8_t> kept = download(gst.kept.get(), T * K, ctx.s());
  EXPECT_EQ(kept, st.kept) << tag;
  EXPECT_EQ(gst.ffn_rows(), st.ffn_rows()) << tag;
  EXPECT_EQ(gst.zc_slots, st.zc_slots) << tag;
  EXPECT_EQ(gst.dropped_slots, st.dropped_slots) << tag;
  EXPECT_TRUE(!k.all_zc || gst.ffn_rows() == 0) << tag;
  EXPECT_TRUE(!c.uses_capacity() || gst.dropped_slots > 0) << tag;
  expect_close(download(gst.w.get(), T * K, ctx.s()), st.w, kF32Bound, tag + " topk_weights");
  expect_close(download(gst.z.get(), T * E, ctx.s()), z.data, kF32Bound, tag + " router_logits");
  expect_close(download(gy.get(), T * D, ctx.s()), y.data, bound, tag + " y");
  EXPECT_NEAR(gst.aux_loss, st.aux_loss, kF32Bound * std::max(1.0f, std::fabs(st.aux_loss))) << tag;
  expect_close(download(gdx.get(), T * D, ctx.s()), dx.data, bound, tag + " grad.x");
  if (c.uses_residual()) expect_close(download(gdzp.get(), T * E, ctx.s()), dzp.data, bound, tag + " grad.gate_residual");
  MoeParams got = MoeParams::zeros(c);
  gg.download(got, c, ctx.s());
  auto want_named = grads.named(c);
  auto got_named = got.named(c);
  ASSERT_EQ(want_named.size(), got_named.size());
  for (size_t i = 0; i < want_named.size(); ++i)
    expect_close(got_named[i].second->data, want_named[i].second->data, bound, tag + " grad." + want_named[i].first);
}

TEST(GpuMoeLayer, MatchesTheCpuLayerInF32) {
  MOEPP_REQUIRE_GPU();
  for (const Case& k : cases()) run_case(k, Precision::kF32, GroupedGemmMode::kPerProduct);
}

TEST(GpuMoeLayer, GroupedGemmMatchesTheCpuLayerInF32) {
  MOEPP_REQUIRE_GPU();
  for (const Case& k : cases()) run_case(k, Precision::kF32, GroupedGemmMode::kGroupedBatched);
}

TEST(GpuMoeLayer, MatchesTheCpuLayerInBF16WithinItsBound) {
  MOEPP_REQUIRE_GPU();
  for (const Case& k : cases()) {
    run_case(k, Precision::kBF16, GroupedGemmMode::kPerProduct);
    run_case(k, Precision::kBF16, GroupedGemmMode::kGroupedBatched);
  }
}

TEST(GpuMoeLayer, RejectsTheReluRouter) {
  const MoeConfig c = MoeConfig::from_json(with(base(), {{"moe_router", "relu"}, {"n_zero_experts", 0},
                                                         {"n_copy_experts", 0}, {"n_constant_experts", 0}}), "t");
  EXPECT_THROW(GpuMoeLayer(c, {}), Error);
}

}  // namespace
}  // namespace moepp::gpu
