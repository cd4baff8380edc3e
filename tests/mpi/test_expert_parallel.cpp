// The MoE layer under expert parallelism against one process on the same global tokens (run at np 1,
// 2 and 4): every rank computes the single-process layer on the whole batch as the reference, then its
// shard of the batch through ExpertParallelFfn with only its own experts' weights. y, the router
// logits, the aux loss, dx, dz_prev and every parameter gradient (dense ones summed over all ranks,
// expert ones over the expert's replicas) must agree within 1e-5 relative; the rows each rank sends
// must be exactly those its routing implies, with nothing for zero-computation slots.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "comm/comm.h"
#include "moe/expert_parallel.h"
#include "moe/moe_layer.h"
#include "mpi_test_env.h"

namespace moepp {
namespace {

struct EpCase {
  std::string name;
  int64_t n_ffn;     // FFN experts (0: one per rank of the expert-parallel group)
  bool capacity;     // training-mode capacity 0.8
  double tau;
  int ep_size;       // 0: all ranks; else groups of this size (data-parallel replicas of each)
  bool empty_rank;   // rank 1 holds no tokens
};

std::vector<float> randn(size_t n, uint64_t seed, float scale) {
  std::mt19937 rng(static_cast<uint32_t>(seed));
  std::normal_distribution<float> d(0.0f, scale);
  std::vector<float> v(n);
  for (float& x : v) x = d(rng);
  return v;
}

Tensor rows_of(const Tensor& t, int64_t r0, int64_t r1) {
  const int64_t C = t.shape[1];
  Tensor out({r1 - r0, C});
  std::copy(t.data.begin() + r0 * C, t.data.begin() + r1 * C, out.data.begin());
  return out;
}

// max|a - b| / max(1, max|b|), over n values.
double rel_err(const float* a, const float* b, size_t n) {
  double d = 0.0, m = 1.0;
  for (size_t i = 0; i < n; ++i) {
    d = std::max(d, std::fabs(static_cast<double>(a[i]) - b[i]));
    m = std::max(m, std::fabs(static_cast<double>(b[i])));
  }
  return d / m;
}

void run_case(const EpCase& c) {
  Comm& world = world_comm();
  const int P = world.size(), me = world.rank();
  const int G = c.ep_size > 0 ? std::min(c.ep_size, P) : P;
  if (P % G != 0) GTEST_SKIP() << "np " << P << " is not a multiple of ep " << G;
  std::unique_ptr<Comm> ep = world.split(me / G, me);         // expert-parallel group
  std::unique_ptr<Comm> replicas = world.split(me % G, me);   // the same experts on other replicas

  MoeConfig cfg;
  cfg.hidden = 16;
  cfg.intermediate = 24;
  cfg.router = RouterKind::kMoepp;
  cfg.n_zero = 1;
  cfg.n_copy = 1;
  cfg.n_constant = 2;
  cfg.n_experts = (c.n_ffn > 0 ? c.n_ffn : G) + 4;
  cfg.two_layer_gate = false;
  cfg.logits_norm = true;
  cfg.no_mul_topk = false;  // K·x: the scaled input travels
  cfg.gating_residual = true;
  cfg.layer_index = 1;
  cfg.training = true;
  cfg.tau = c.tau;
  cfg.aux_loss_coef = 0.1f;
  if (c.capacity) cfg.capacity_factor = 0.8;
  cfg.validate("test");
  const int64_t D = cfg.hidden, E = cfg.n_experts, T = 37;

  MoeParams p = MoeParams::zeros(cfg);
  p.init_random(cfg, 11, 0.5f);
  Tensor x({T, D}), zp({T, E}), dy({T, D}), dz({T, E});
  x.data = randn(T * D, 1, 1.0f);
  zp.data = randn(T * E, 2, 1.0f);
  dy.data = randn(T * D, 3, 1.0f);
  dz.data = randn(T * E, 4, 0.3f);

  // The reference: one process, the whole batch.
  const MoeLayer layer(cfg);
  Tensor y_ref, z_ref, dx_ref, dzp_ref;
  MoeForwardState st_ref;
  MoeBackwardScratch sc_ref;
  MoeParams g_ref = MoeParams::zeros(cfg);
  layer.forward(y_ref, z_ref, st_ref, x, &zp, p);
  layer.backward(dx_ref, &dzp_ref, g_ref, sc_ref, dy, &dz, st_ref, p);

  // This rank's shard (rank 1 empty when asked) and its experts only.
  std::vector<int64_t> bound(P + 1, 0);
  for (int r = 0; r <= P; ++r) bound[r] = T * r / P;
  if (c.empty_rank && P > 1) bound[1] = bound[2];  // rank 0 takes rank 1's tokens
  const int64_t t0 = bound[me], t1 = bound[me + 1];
  const int64_t per = ExpertParallelFfn::experts_per_rank(cfg, G), first = ep->rank() * per;
  MoeParams mine = p;
  for (int64_t e = 0; e < cfg.n_ffn(); ++e)
    if (e < first || e >= first + per) mine.up[e] = mine.down[e] = Tensor();
  MoeParams g = MoeParams::zeros(cfg);
  ExpertParallelFfn experts(*ep, mine, &g);
  const Tensor xs = rows_of(x, t0, t1), zps = rows_of(zp, t0, t1), dys = rows_of(dy, t0, t1), dzs = rows_of(dz, t0, t1);
  Tensor y, z, dx, dzp;
  MoeForwardState st;
  MoeBackwardScratch sc;
  layer.forward(y, z, st, xs, &zps, mine, &experts, &world);
  layer.backward(dx, &dzp, g, sc, dys, &dzs, st, mine, &experts);

  const int64_t n = t1 - t0;
  EXPECT_LE(rel_err(y.ptr(), y_ref.ptr() + t0 * D, n * D), 1e-5) << "y";
  EXPECT_LE(rel_err(z.ptr(), z_ref.ptr() + t0 * E, n * E), 1e-5) << "router logits";
  EXPECT_LE(rel_err(dx.ptr(), dx_ref.ptr() + t0 * D, n * D), 1e-5) << "dx";
  EXPECT_LE(rel_err(dzp.ptr(), dzp_ref.ptr() + t0 * E, n * E), 1e-5) << "dz_prev";
  EXPECT_NEAR(st.aux_loss, st_ref.aux_loss, 1e-6 * std::max(1.0f, std::fabs(st_ref.aux_loss)));
  double counts[2] = {static_cast<double>(st.dropped_slots), static_cast<double>(st.ffn_rows())};
  world.allreduce_sum(counts, 2);
  EXPECT_EQ(counts[0], static_cast<double>(st_ref.dropped_slots)) << "capacity drops";
  EXPECT_EQ(counts[1], static_cast<double>(st_ref.ffn_rows())) << "FFN rows";
  if (c.capacity) {
    EXPECT_GT(st_ref.dropped_slots, 0) << "the case should drop slots";
  }

  // Dense gradients: the sum over all ranks. Expert gradients: the sum over the expert's replicas.
  auto dense = [&](Tensor& got, const Tensor& want, const std::string& what) {
    if (want.empty()) return;
    world.allreduce_sum(got.ptr(), static_cast<int64_t>(got.numel()));
    EXPECT_LE(rel_err(got.ptr(), want.ptr(), want.numel()), 1e-5) << what;
  };
  dense(g.wg, g_ref.wg, "wg");
  dense(g.gate_map, g_ref.gate_map, "gate_map");
  for (int64_t k = 0; k < cfg.n_constant; ++k) {
    dense(g.const_wg[k], g_ref.const_wg[k], "const_wg");
    dense(g.const_v[k], g_ref.const_v[k], "const_v");
  }
  for (int64_t e = first; e < first + per; ++e) {
    replicas->allreduce_sum(g.up[e].ptr(), static_cast<int64_t>(g.up[e].numel()));
    replicas->allreduce_sum(g.down[e].ptr(), static_cast<int64_t>(g.down[e].numel()));
    EXPECT_LE(rel_err(g.up[e].ptr(), g_ref.up[e].ptr(), g_ref.up[e].numel()), 1e-5) << "up " << e;
    EXPECT_LE(rel_err(g.down[e].ptr(), g_ref.down[e].ptr(), g_ref.down[e].numel()), 1e-5) << "down " << e;
  }

  // Rows sent to other ranks: exactly this rank's kept FFN rows of remote experts (forward: out, and
  // as many outputs back from the owners in total; backward: the same). Zero-computation slots send
  // nothing: only FFN rows are ever counted.
  int64_t remote = 0;
  for (int64_t e = 0; e < cfg.n_ffn(); ++e)
    if (e < first || e >= first + per) remote += st.ffn_offset[e + 1] - st.ffn_offset[e];
  double sent[3] = {static_cast<double>(remote), static_cast<double>(st.ep.fwd_rows_out),
                    static_cast<double>(st.ep.bwd_rows_out)};
  ep->allreduce_sum(sent, 3);
  EXPECT_EQ(sent[1], 2 * sent[0]) << "forward rows to other ranks";
  EXPECT_EQ(sent[2], 2 * sent[0]) << "backward rows to other ranks";
  EXPECT_LE(remote, st.ffn_rows());
}

class ExpertParallelLayer : public ::testing::TestWithParam<EpCase> {};

TEST_P(ExpertParallelLayer, EqualsOneProcessOnTheWholeBatch) { run_case(GetParam()); }

INSTANTIATE_TEST_SUITE_P(
    Cases, ExpertParallelLayer,
    ::testing::Values(EpCase{"dropless_tau075", 8, false, 0.75, 0, false},
                      EpCase{"capacity_tau075", 8, true, 0.75, 0, false},
                      EpCase{"capacity_tau025", 8, true, 0.25, 0, false},
                      EpCase{"one_expert_per_rank_capacity", 0, true, 0.75, 0, false},
                      EpCase{"rank1_without_tokens", 4, true, 0.75, 0, true},
                      EpCase{"ep2_data_parallel_replicas", 4, true, 0.75, 2, false}),
    [](const ::testing::TestParamInfo<EpCase>& i) { return i.param.name; });

}  // namespace
}  // namespace moepp
