// Tests of src/gpu/gpu_balance on a GPU: the statistics equal the CPU's balance_statistics.
#include "gpu/gpu_balance.h"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "gpu/device_memory.h"
#include "gpu/gpu_context.h"
#include "gpu_test_util.h"
#include "moe/balance_loss.h"

namespace moepp::gpu {
namespace {

TEST(GpuBalance, StatisticsEqualTheCpu) {
  MOEPP_REQUIRE_GPU();
  GpuContext ctx;
  const MoeConfig c = MoeConfig::from_json(
      {{"hidden_size", 8}, {"intermediate_size", 8}, {"num_experts", 12}, {"moe_top_k", 3}, {"training", true}}, "t");
  const int64_t T = 1001, E = c.n_experts, K = c.top_k;
  std::vector<int32_t> ids(T * K);
  for (int64_t i = 0; i < T * K; ++i) ids[i] = static_cast<int32_t>((i * 7 + i / 5) % E);
  std::vector<float> p = test::randn(T * E, 3);
  for (float& v : p) v = std::fabs(v);
  std::vector<double> want(balance_statistics_size(c));
  moepp::balance_statistics(want.data(), ids.data(), p.data(), nullptr, c, T);
  DeviceBuffer<int32_t> d_ids;
  DeviceBuffer<float> d_p;
  DeviceBuffer<double> d_stats(want.size());
  upload(d_ids, ids, ctx.s());
  upload(d_p, p, ctx.s());
  balance_statistics(d_stats.get(), d_ids.get(), d_p.get(), c, T, ctx.s());
  const std::vector<double> got = download(d_stats.get(), want.size(), ctx.s());
  for (size_t i = 0; i < want.size(); ++i) EXPECT_NEAR(got[i], want[i], 1e-9 * std::max(1.0, std::fabs(want[i]))) << i;
}

}  // namespace
}  // namespace moepp::gpu
