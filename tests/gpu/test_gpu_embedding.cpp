// Tests of src/gpu/gpu_embedding: the host-side plan of the race-free backward (grouping, stable order,
// errors) on any machine; on a GPU, forward and backward against a direct host loop with repeated ids
// (accumulating into a non-zero table gradient).
#include "gpu/gpu_embedding.h"

#include <gtest/gtest.h>

#include "core/error.h"
#include "gpu/device_memory.h"
#include "gpu/gpu_context.h"
#include "gpu_test_util.h"

namespace moepp::gpu {
namespace {

TEST(GpuEmbeddingPlan, GroupsPositionsByTokenInOrder) {
  const std::vector<int32_t> tokens = {5, 2, 5, 0, 2, 5, 9};
  const EmbeddingGradPlan p = embedding_grad_plan(tokens.data(), 7, 10);
  EXPECT_EQ(p.token, (std::vector<int32_t>{0, 2, 5, 9}));
  EXPECT_EQ(p.start, (std::vector<int32_t>{0, 1, 3, 6, 7}));
  EXPECT_EQ(p.order, (std::vector<int32_t>{3, 1, 4, 0, 2, 5, 6}));
  const std::vector<int32_t> packed = p.packed();
  EXPECT_EQ(packed.size(), 7u + 4u + 5u);
  EXPECT_EQ(packed[7], 0);
  EXPECT_EQ(packed.back(), 7);
}

TEST(GpuEmbeddingPlan, EmptyBatchAndErrors) {
  const EmbeddingGradPlan p = embedding_grad_plan(nullptr, 0, 4);
  EXPECT_TRUE(p.order.empty());
  EXPECT_TRUE(p.token.empty());
  EXPECT_EQ(p.start, std::vector<int32_t>{0});
  const std::vector<int32_t> bad = {1, 4};
  EXPECT_THROW(embedding_grad_plan(bad.data(), 2, 4), Error);
  const std::vector<int32_t> neg = {-1};
  EXPECT_THROW(embedding_grad_plan(neg.data(), 1, 4), Error);
  EXPECT_THROW(embedding_grad_plan(bad.data(), 2, 0), Error);
  EXPECT_THROW(embedding_grad_plan(bad.data(), -1, 4), Error);
}

TEST(GpuEmbedding, ForwardAndBackwardMatchAHostLoop) {
  MOEPP_REQUIRE_GPU();
  const int64_t V = 11, D = 37, N = 70;
  std::vector<int32_t> tokens(N);
  for (int64_t n = 0; n < N; ++n) tokens[n] = static_cast<int32_t>((n * 7) % 5 + (n % 3) * 3);  // repeats
  const std::vector<float> table = test::randn(V * D, 1), dout = test::randn(N * D, 2), g0 = test::randn(V * D, 3);
  std::vector<float> out_ref(N * D), dtable_ref = g0;
  for (int64_t n = 0; n < N; ++n)
    for (int64_t j = 0; j < D; ++j) {
      out_ref[n * D + j] = table[tokens[n] * D + j];
      dtable_ref[tokens[n] * D + j] += dout[n * D + j];
    }
  GpuContext ctx;
  DeviceBuffer<int32_t> dt, plan;
  DeviceBuffer<float> dtab, ddout, dg, dout_dev(N * D);
  upload(dt, tokens, ctx.s());
  upload(dtab, table, ctx.s());
  upload(ddout, dout, ctx.s());
  upload(dg, g0, ctx.s());
  embedding_forward(dout_dev.get(), dt.get(), dtab.get(), N, D, ctx.s());
  const EmbeddingGradPlan p = embedding_grad_plan(tokens.data(), N, V);
  upload(plan, p.packed(), ctx.s());
  embedding_backward(dg.get(), ddout.get(), plan.get(), N, static_cast<int64_t>(p.token.size()), D, ctx.s());
  EXPECT_EQ(download(dout_dev.get(), N * D, ctx.s()), out_ref);
  EXPECT_LE(test::rel_error(download(dg.get(), V * D, ctx.s()), dtable_ref), 1e-6);
}

}  // namespace
}  // namespace moepp::gpu
