// Unit tests of MoE dispatch (src/moe/dispatch): capacity drops slots by rank, then by token, and the
// per-type capacities of MoE++ (FFN and zero-computation experts), dropless in inference.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <vector>

#include "moe/dispatch.h"
#include "moe/moe_config.h"
#include "moe/moe_state.h"
#include "tiny_models.h"

namespace moepp {
namespace {

using test::small_moe_config;

TEST(Dispatch, CapacityDropsByRankThenToken) {
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

// The same batch split over two processes (tokens 0-1 and 2-3): with the selections that come before
// each half (slot ranks < k everywhere, rank k of the first half), each half keeps exactly the slots
// the whole batch keeps.
TEST(Dispatch, SplitBatchAdmitsAsTheWholeBatch) {
  MoeConfig c = small_moe_config(RouterKind::kMoepp);  // 4 FFN + 4 ZC, K 2
  c.capacity_factor = 0.45;
  const int64_t T = 40, W = 2, E = c.n_experts;
  std::vector<int32_t> ids(T * W);
  for (int64_t t = 0; t < T; ++t) {
    ids[t * W] = static_cast<int32_t>((t * 7) % E);
    ids[t * W + 1] = static_cast<int32_t>((t * 3 + 1 + (t * 7) % E) % E);
  }
  const std::vector<int64_t> cap = expert_capacity(c, T);
  auto run = [&](int64_t t0, int64_t n, const int64_t* before) {
    std::vector<uint8_t> kept(n * W, 1);
    std::vector<int64_t> offset(c.n_ffn() + 1);
    std::vector<int32_t> slot(n * W), row_of_slot(n * W);
    dispatch_slots(kept.data(), offset.data(), slot.data(), row_of_slot.data(), ids.data() + t0 * W, cap.data(),
                   before, c, n);
    return kept;
  };
  const std::vector<uint8_t> whole = run(0, T, nullptr);
  ASSERT_GT(std::count(whole.begin(), whole.end(), 0), 0);  // capacity drops some slots
  const int64_t half = 23;
  std::vector<int64_t> a(W * E), b(W * E);
  selections_by_rank(a.data(), ids.data(), c, half);
  selections_by_rank(b.data(), ids.data() + half * W, c, T - half);
  std::vector<int64_t> before0(W * E, 0), before1(W * E, 0);
  for (int64_t k = 0; k < W; ++k)
    for (int64_t e = 0; e < E; ++e) {
      for (int64_t k2 = 0; k2 < k; ++k2) {
        before0[k * E + e] += a[k2 * E + e] + b[k2 * E + e];
        before1[k * E + e] += a[k2 * E + e] + b[k2 * E + e];
      }
      before1[k * E + e] += a[k * E + e];
    }
  std::vector<uint8_t> split = run(0, half, before0.data());
  const std::vector<uint8_t> second = run(half, T - half, before1.data());
  split.insert(split.end(), second.begin(), second.end());
  EXPECT_EQ(split, whole);
}

TEST(Dispatch, MoeppCapacityPerType) {
  MoeConfig c = small_moe_config(RouterKind::kMoepp);  // 4 FFN + 4 ZC, tau 0.75
  c.capacity_factor = 1.1;
  // slots S = 2 * 100; C_FFN = ceil(1.1 * 0.75 * 200 / (0.75 * 4 + 4)) = ceil(23.57) = 24; C_ZC = ceil(31.43) = 32
  const auto cap = expert_capacity(c, 100);
  EXPECT_EQ(cap[0], 24);
  EXPECT_EQ(cap[4], 32);
  c.training = false;  // inference is dropless
  EXPECT_EQ(expert_capacity(c, 100)[0], -1);
}

}  // namespace
}  // namespace moepp
