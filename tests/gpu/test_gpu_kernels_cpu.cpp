// Tests of the training step's GPU kernels against the CPU functions they mirror (full build only: they
// need the CPU model): RMSNorm (model/rmsnorm.h), RoPE (model/rope.h), causal attention with grouped KV
// heads (model/attention.h; T not a multiple of any block size, T = 1, several score chunks), the LM
// head with cross-entropy (model/lm_head_ce.h; ignored targets), and AdamW with the gradient norm
// (train/adamw.h), forward and backward, in fp32 within 1e-5 of each tensor's scale. On a GPU only
// (skipped visibly without one).
#include <gtest/gtest.h>

#include <cmath>

#include "gpu/gpu_adamw.h"
#include "gpu/gpu_attention.h"
#include "gpu/gpu_context.h"
#include "gpu/gpu_lm_head_ce.h"
#include "gpu/gpu_rmsnorm.h"
#include "gpu/gpu_rope.h"
#include "gpu_test_util.h"
#include "model/attention.h"
#include "model/lm_head_ce.h"
#include "model/rmsnorm.h"
#include "model/rope.h"
#include "train/adamw.h"

namespace moepp::gpu {
namespace {

constexpr double kBound = 1e-5;

DeviceBuffer<float> dev(const std::vector<float>& v, cudaStream_t s) {
  DeviceBuffer<float> b;
  upload(b, v, s);
  return b;
}

TEST(GpuKernels, RmsNormMatchesTheCpu) {
  MOEPP_REQUIRE_GPU();
  for (const auto& [N, D] : std::vector<std::pair<int64_t, int64_t>>{{37, 48}, {1, 7}, {130, 300}}) {
    const std::vector<float> x = test::randn(N * D, 1), w = test::randn(D, 2), dy = test::randn(N * D, 3);
    const std::vector<float> dx0 = test::randn(N * D, 4), dw0 = test::randn(D, 5);
    std::vector<float> out(N * D), rstd(N), dx = dx0, dw = dw0;
    moepp::rmsnorm_forward(out.data(), rstd.data(), x.data(), w.data(), N, D, 1e-6f);
    moepp::rmsnorm_backward(dx.data(), dw.data(), dy.data(), x.data(), w.data(), rstd.data(), N, D);
    GpuContext ctx;
    cudaStream_t s = ctx.s();
    DeviceBuffer<float> gx = dev(x, s), gw = dev(w, s), gdy = dev(dy, s), gdx = dev(dx0, s), gdw = dev(dw0, s);
    DeviceBuffer<float> gout(N * D), grstd(N), scratch(rmsnorm_backward_scratch(D));
    gpu::rmsnorm_forward(gout.get(), grstd.get(), gx.get(), gw.get(), N, D, 1e-6f, s);
    gpu::rmsnorm_backward(gdx.get(), gdw.get(), scratch.get(), gdy.get(), gx.get(), gw.get(), grstd.get(), N, D, s);
    const std::string tag = "N=" + std::to_string(N) + " D=" + std::to_string(D);
    EXPECT_LE(test::rel_error(download(gout.get(), N * D, s), out), kBound) << tag;
    EXPECT_LE(test::rel_error(download(grstd.get(), N, s), rstd), kBound) << tag;
    EXPECT_LE(test::rel_error(download(gdx.get(), N * D, s), dx), kBound) << tag;
    EXPECT_LE(test::rel_error(download(gdw.get(), D, s), dw), kBound) << tag;
  }
}

TEST(GpuKernels, RopeMatchesTheCpuForwardAndBackward) {
  MOEPP_REQUIRE_GPU();
  const int64_t B = 3, T = 37, nh = 3, hd = 10;
  RopeTable rt;
  rt.build(T, hd, 10000.0f);
  const std::vector<float> x = test::randn(B * T * nh * hd, 1);
  std::vector<float> f = x, b = x;
  moepp::rope_forward(f.data(), rt, B, T, nh, hd);
  moepp::rope_backward(b.data(), rt, B, T, nh, hd);
  GpuContext ctx;
  cudaStream_t s = ctx.s();
  DeviceBuffer<float> c = dev(rt.cos, s), sn = dev(rt.sin, s), gf = dev(x, s), gb = dev(x, s);
  gpu::rope_forward(gf.get(), c.get(), sn.get(), B, T, nh, hd, s);
  gpu::rope_backward(gb.get(), c.get(), sn.get(), B, T, nh, hd, s);
  EXPECT_LE(test::rel_error(download(gf.get(), f.size(), s), f), kBound);
  EXPECT_LE(test::rel_error(download(gb.get(), b.size(), s), b), kBound);
}

void attention_case(int64_t B, int64_t T, int64_t H, int64_t KVH, int64_t hd, int64_t max_score_floats) {
  const int64_t Q = H * hd, KV = KVH * hd, N = B * T;
  const std::vector<float> q = test::randn(N * Q, 1), k = test::randn(N * KV, 2), v = test::randn(N * KV, 3);
  const std::vector<float> dout = test::randn(N * Q, 4);
  std::vector<float> out(N * Q), lse(N * H), dq(N * Q), dk(N * KV), dv(N * KV);
  const AttnShape as{B, T, H, KVH, hd};
  moepp::attention_forward(out.data(), lse.data(), q.data(), k.data(), v.data(), as);
  moepp::attention_backward(dq.data(), dk.data(), dv.data(), dout.data(), q.data(), k.data(), v.data(), out.data(),
                            lse.data(), as);
  GpuContext ctx;
  cudaStream_t s = ctx.s();
  GpuAttnScratch sc;
  sc.max_score_floats = max_score_floats;
  DeviceBuffer<float> gq = dev(q, s), gk = dev(k, s), gv = dev(v, s), gdo = dev(dout, s);
  DeviceBuffer<float> gout(N * Q), glse(N * H), gdq(N * Q), gdk(N * KV), gdv(N * KV);
  const GpuAttnShape gs{B, T, H, KVH, hd};
  gpu::attention_forward(gout.get(), glse.get(), sc, gq.get(), gk.get(), gv.get(), gs, ctx.blas.get(), s);
  gpu::attention_backward(gdq.get(), gdk.get(), gdv.get(), sc, gdo.get(), gq.get(), gk.get(), gv.get(), glse.get(), gs,
                          ctx.blas.get(), s);
  const std::string tag = "B=" + std::to_string(B) + " T=" + std::to_string(T) + " H=" + std::to_string(H) +
                          " KVH=" + std::to_string(KVH) + " chunk budget " + std::to_string(max_score_floats);
  EXPECT_LE(test::rel_error(download(gout.get(), N * Q, s), out), kBound) << tag;
  EXPECT_LE(test::rel_error(download(glse.get(), N * H, s), lse), kBound) << tag;
  EXPECT_LE(test::rel_error(download(gdq.get(), N * Q, s), dq), kBound) << tag;
  EXPECT_LE(test::rel_error(download(gdk.get(), N * KV, s), dk), kBound) << tag;
  EXPECT_LE(test::rel_error(download(gdv.get(), N * KV, s), dv), kBound) << tag;
}

TEST(GpuKernels, AttentionMatchesTheCpu) {
  MOEPP_REQUIRE_GPU();
  attention_case(2, 37, 4, 2, 16, int64_t{1} << 27);  // GQA, one chunk
  attention_case(3, 37, 4, 1, 8, 4 * 37 * 37);        // multi-query, one sequence per chunk
  attention_case(2, 1, 2, 2, 8, int64_t{1} << 27);    // T = 1
  attention_case(1, 130, 2, 2, 32, int64_t{1} << 27); // T above the CPU's 64-row tiles
}

TEST(GpuKernels, LmHeadCrossEntropyMatchesTheCpu) {
  MOEPP_REQUIRE_GPU();
  const int64_t N = 45, D = 24, V = 300;
  const std::vector<float> xf = test::randn(N * D, 1), W = test::randn(V * D, 2, 0.3f), dW0 = test::randn(V * D, 3);
  std::vector<int32_t> targets(N);
  for (int64_t n = 0; n < N; ++n) targets[n] = n % 7 == 3 ? -1 : static_cast<int32_t>((n * 31) % V);
  std::vector<float> lse(N), dxf(N * D), dW = dW0;
  LmHeadScratch csc;
  const float loss = moepp::lm_head_ce_forward(nullptr, lse.data(), dxf.data(), dW.data(), csc, xf.data(), W.data(),
                                               targets.data(), N, D, V);
  GpuContext ctx;
  cudaStream_t s = ctx.s();
  DeviceBuffer<float> gx = dev(xf, s), gW = dev(W, s), gdW = dev(dW0, s), glse(N), gdxf(N * D);
  DeviceBuffer<int32_t> gt;
  upload(gt, targets, s);
  GpuLmHeadScratch sc;
  const float gloss = gpu::lm_head_ce_forward(glse.get(), gdxf.get(), gdW.get(), sc, {gx.get(), gW.get(), ElemType::kF32},
                                              gt.get(), targets.data(), N, D, V, ctx.blas.get(), s);
  EXPECT_NEAR(gloss, loss, kBound * std::max(1.0f, std::fabs(loss)));
  EXPECT_LE(test::rel_error(download(glse.get(), N, s), lse), kBound);
  EXPECT_LE(test::rel_error(download(gdxf.get(), N * D, s), dxf), kBound);
  EXPECT_LE(test::rel_error(download(gdW.get(), V * D, s), dW), kBound);
  // Without targets to learn from: loss 0 and dxf zero.
  const std::vector<int32_t> none(N, -1);
  DeviceBuffer<int32_t> gn;
  upload(gn, none, s);
  EXPECT_EQ(gpu::lm_head_ce_forward(glse.get(), gdxf.get(), gdW.get(), sc, {gx.get(), gW.get(), ElemType::kF32}, gn.get(),
                                    none.data(), N, D, V, ctx.blas.get(), s),
            0.0f);
  EXPECT_EQ(download(gdxf.get(), N * D, s), std::vector<float>(N * D, 0.0f));
}

TEST(GpuKernels, AdamWAndGradNormMatchTheCpu) {
  MOEPP_REQUIRE_GPU();
  Tensor w1({7, 5}), g1({7, 5}), w2({9}), g2({9});
  w1.data = test::randn(35, 1);
  g1.data = test::randn(35, 2);
  w2.data = test::randn(9, 3);
  g2.data = test::randn(9, 4);
  GpuContext ctx;
  cudaStream_t s = ctx.s();
  DeviceBuffer<float> gw1 = dev(w1.data, s), gg1 = dev(g1.data, s), gw2 = dev(w2.data, s), gg2 = dev(g2.data, s);
  const AdamWConfig cfg{0.9f, 0.95f, 1e-8f, 0.1f};
  AdamW cpu({{"w1", &w1, &g1}, {"w2", &w2, &g2}}, cfg);
  GpuAdamW gpu({{"w1", gw1.get(), gg1.get(), 35, decays(w1)}, {"w2", gw2.get(), gg2.get(), 9, decays(w2)}}, cfg, s);
  EXPECT_NEAR(gpu.grad_sum_squares(s), grad_sum_squares(cpu.params()), 1e-12 * grad_sum_squares(cpu.params()));
  for (int step = 0; step < 3; ++step) {
    cpu.step(1e-2f * static_cast<float>(step + 1), 0.7f);
    gpu.step(1e-2f * static_cast<float>(step + 1), 0.7f, s);
  }
  EXPECT_EQ(gpu.steps(), 3);
  EXPECT_LE(test::rel_error(download(gw1.get(), 35, s), w1.data), kBound);
  EXPECT_LE(test::rel_error(download(gw2.get(), 9, s), w2.data), kBound);
}

}  // namespace
}  // namespace moepp::gpu
