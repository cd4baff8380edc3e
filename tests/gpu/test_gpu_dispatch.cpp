// Tests of src/gpu/gpu_dispatch on a GPU: capacity drops, FFN row grouping and counters equal the CPU
// dispatch (moe/dispatch.h) on the same slots, for dropless and capacity-limited configs.
#include "gpu/gpu_dispatch.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <nlohmann/json.hpp>
#include <numeric>
#include <random>

#include "gpu/device_memory.h"
#include "gpu/gpu_context.h"
#include "gpu_test_util.h"

namespace moepp::gpu {
namespace {

// T tokens of K distinct random experts each, skewed towards low ids so that capacity drops happen.
std::vector<int32_t> random_ids(const MoeConfig& c, int64_t T, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<int32_t> ids(T * c.top_k);
  std::vector<int32_t> order(c.n_experts);
  for (int64_t t = 0; t < T; ++t) {
    std::iota(order.begin(), order.end(), 0);
    std::shuffle(order.begin(), order.end(), rng);
    std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return (a < 3) > (b < 3); });
    if (rng() % 3 == 0) std::shuffle(order.begin(), order.end(), rng);
    std::copy(order.begin(), order.begin() + c.top_k, ids.begin() + t * c.top_k);
  }
  return ids;
}

void check_same_as_cpu(const MoeConfig& c, int64_t T, uint64_t seed) {
  GpuContext ctx;
  const int64_t K = c.top_k, NF = c.n_ffn();
  const std::vector<int32_t> ids = random_ids(c, T, seed);
  std::vector<uint8_t> kept(T * K, 1);
  const std::vector<int64_t> cap = expert_capacity(c, T);

  std::vector<int64_t> offset(NF + 1);
  std::vector<int32_t> slot(T * K, -7), row(T * K);
  std::vector<uint8_t> kept_cpu = kept;
  const DispatchCounts want = moepp::dispatch_slots(kept_cpu.data(), offset.data(), slot.data(), row.data(), ids.data(),
                                                    cap.data(), nullptr, c, T);

  DeviceBuffer<int32_t> d_ids, d_slot(T * K), d_row(T * K);
  DeviceBuffer<uint8_t> d_kept;
  DeviceBuffer<int64_t> d_cap, d_info(dispatch_info_size(c));
  upload(d_ids, ids, ctx.s());
  upload(d_kept, kept, ctx.s());
  upload(d_cap, cap, ctx.s());
  std::vector<int64_t> info(dispatch_info_size(c));
  const DispatchCounts got = dispatch_slots(d_kept.get(), d_info.get(), info.data(), d_slot.get(), d_row.get(),
                                            d_ids.get(), c.uses_capacity() ? d_cap.get() : nullptr, c, T, ctx.s());
  EXPECT_EQ(got.dropped_slots, want.dropped_slots);
  EXPECT_EQ(got.zc_slots, want.zc_slots);
  EXPECT_EQ(std::vector<int64_t>(info.begin(), info.begin() + NF + 1), offset);
  EXPECT_EQ(download(d_kept.get(), T * K, ctx.s()), kept_cpu);
  EXPECT_EQ(download(d_row.get(), T * K, ctx.s()), row);
  const std::vector<int32_t> gslot = download(d_slot.get(), T * K, ctx.s());
  EXPECT_TRUE(std::equal(gslot.begin(), gslot.begin() + offset[NF], slot.begin()));
  EXPECT_TRUE(!c.uses_capacity() || want.dropped_slots > 0);
}

MoeConfig config(bool capacity, int64_t E, int64_t K) {
  nlohmann::json j = {{"hidden_size", 8}, {"intermediate_size", 8}, {"num_experts", E}, {"moe_top_k", K},
                      {"training", capacity}};
  if (capacity) j["moe_capacity_factor"] = 0.8;
  return MoeConfig::from_json(j, "test");
}

TEST(GpuDispatch, DroplessGroupingEqualsTheCpu) {
  MOEPP_REQUIRE_GPU();
  check_same_as_cpu(config(false, 8, 2), 1, 1);
  check_same_as_cpu(config(false, 8, 2), 3001, 2);  // several 1024-slot chunks, not a multiple
  check_same_as_cpu(config(false, 20, 3), 777, 3);
}

TEST(GpuDispatch, CapacityDropsEqualTheCpu) {
  MOEPP_REQUIRE_GPU();
  check_same_as_cpu(config(true, 8, 2), 513, 4);
  check_same_as_cpu(config(true, 12, 2), 2600, 5);
  check_same_as_cpu(config(true, 20, 4), 999, 6);
}

TEST(GpuDispatch, NoTokensLeavesEmptyGroups) {
  MOEPP_REQUIRE_GPU();
  GpuContext ctx;
  const MoeConfig c = config(false, 8, 2);
  DeviceBuffer<int64_t> info(dispatch_info_size(c));
  std::vector<int64_t> host(dispatch_info_size(c), 99);
  const DispatchCounts n = dispatch_slots(nullptr, info.get(), host.data(), nullptr, nullptr, nullptr, nullptr, c, 0, ctx.s());
  EXPECT_EQ(n.zc_slots, 0);
  EXPECT_EQ(n.dropped_slots, 0);
  EXPECT_EQ(host, std::vector<int64_t>(dispatch_info_size(c), 0));
}

}  // namespace
}  // namespace moepp::gpu
