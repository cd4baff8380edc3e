// Unit tests of MoE dispatch (src/moe/dispatch): capacity drops slots by rank, then by token, and the
// per-type capacities of MoE++ (FFN and zero-computation experts), dropless in inference.
#include <gtest/gtest.h>

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
  MoeForwardState st;
  st.T = 4;
  st.W = 2;
  // token: (first, second) choice
  st.ids = {0, 1, 0, 2, 1, 0, 3, 0};
  st.kept.assign(8, 1);
  dispatch_slots(st, c);
  // Rank 0 in token order: t0->0 kept, t1->0 dropped, t2->1 kept, t3->3 kept.
  // Rank 1: t0->1 dropped (1 full), t1->2 kept, t2->0 dropped, t3->0 dropped.
  const std::vector<uint8_t> want = {1, 0, 0, 1, 1, 0, 1, 0};
  EXPECT_EQ(st.kept, want);
  EXPECT_EQ(st.dropped_slots, 4);
  EXPECT_EQ(st.ffn_rows(), 4);
  EXPECT_EQ(expert_capacity(c, 4), std::vector<int64_t>(4, 1));
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
