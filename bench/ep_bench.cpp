// `moepp bench ep` (see ep_bench.h). Every rank holds `tokens` tokens of its own (weak scaling) and the
// FFN experts it owns; the router is replicated. Each repetition runs the vanilla layer and then the
// MoE++ layer (forward + backward, training mode, dropless), so the two sides see the same machine
// state; medians over the repetitions of the slowest rank's times are reported. Bytes: every rank's
// rows to other ranks (both all-to-alls of a pass) times D times 4 bytes, summed over the ranks; the
// routing implies twice each rank's kept FFN rows of remote experts; a balanced router would send
// 2 K f D 4 (G - 1) / G bytes per token per pass.
#include "ep_bench.h"

#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <random>
#include <vector>

#include "bench_env.h"
#include "bench_stats.h"
#include "core/error.h"
#include "cpu_router_bias.h"
#include "layer_cases.h"
#include "moe/expert_parallel.h"
#include "moe/moe_layer.h"

namespace moepp {
namespace {

double now_s() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// The largest value over the ranks (via allgather of microseconds).
double slowest(Comm& world, double seconds) {
  const int64_t us = static_cast<int64_t>(seconds * 1e6);
  std::vector<int64_t> all(world.size());
  world.allgather(all.data(), &us, 1);
  return static_cast<double>(*std::max_element(all.begin(), all.end())) / 1e6;
}

struct Pass {
  std::vector<double> fwd_s, bwd_s, comm_s;
  double rows_fwd = 0, rows_bwd = 0, rows_implied = 0, ffn_rows = 0, slots = 0;
};

Tensor random_tokens(int64_t T, int64_t D, uint32_t seed) {
  Tensor x({T, D});
  std::mt19937 rng(seed);
  std::normal_distribution<float> n01;
  for (float& v : x.data) v = n01(rng);
  for (int64_t t = 0; t < T; ++t) x.data[t * D] = 1.0f;  // the bias feature (layer_cases.h)
  return x;
}

// One forward + backward of the layer with this rank's experts; records times and row counts.
void run_pass(Pass& out, const MoeConfig& c, const MoeParams& mine, const Tensor& x, const Tensor& dy, Comm& world) {
  const MoeLayer layer(c);
  MoeForwardState st;
  MoeBackwardScratch sc;
  MoeParams g = MoeParams::zeros(c);
  ExpertParallelFfn experts(world, mine, &g);
  Tensor y, z, dx;
  const double t0 = now_s();
  layer.forward(y, z, st, x, nullptr, mine, &experts, &world);
  const double t1 = now_s();
  layer.backward(dx, nullptr, g, sc, dy, nullptr, st, mine, &experts);
  const double t2 = now_s();
  out.fwd_s.push_back(slowest(world, t1 - t0));
  out.bwd_s.push_back(slowest(world, t2 - t1));
  out.comm_s.push_back(slowest(world, st.ep.fwd_comm_s + st.ep.bwd_comm_s));
  const int64_t per = ExpertParallelFfn::experts_per_rank(c, world.size()), first = world.rank() * per;
  double remote = 0;
  for (int64_t e = 0; e < c.n_ffn(); ++e)
    if (e < first || e >= first + per) remote += static_cast<double>(st.ffn_offset[e + 1] - st.ffn_offset[e]);
  double counts[5] = {static_cast<double>(st.ep.fwd_rows_out), static_cast<double>(st.ep.bwd_rows_out), 2 * remote,
                      static_cast<double>(st.ffn_rows()), static_cast<double>(st.ids.size())};
  world.allreduce_sum(counts, 5);
  out.rows_fwd = counts[0];
  out.rows_bwd = counts[1];
  out.rows_implied = counts[2];
  out.ffn_rows = counts[3];
  out.slots = counts[4];
}

nlohmann::json side(const Pass& p, const MoeConfig& c) {
  const double fwd = median(p.fwd_s), bwd = median(p.bwd_s), comm = median(p.comm_s), B = 4.0 * c.hidden;
  return {{"fwd_ms", fwd * 1e3},
          {"bwd_ms", bwd * 1e3},
          {"comm_ms", comm * 1e3},
          {"comm_share", comm / (fwd + bwd)},
          {"ffn_slot_fraction", p.ffn_rows / p.slots},
          {"bytes_fwd", p.rows_fwd * B},
          {"bytes_bwd", p.rows_bwd * B},
          {"bytes_implied_by_routing", p.rows_implied * B},
          {"bytes_match_routing", p.rows_fwd == p.rows_implied && p.rows_bwd == p.rows_implied}};
}

}  // namespace

int run_ep_bench(const EpBenchOptions& opt, Comm& world) {
  check(opt.reps >= 1 && opt.tokens >= 1, "bench ep: --reps and --tokens must be >= 1");
  const std::vector<ShapeCase> shapes = shapes_named(opt.cases, "bench ep");
  const std::vector<double> fractions = fractions_named(opt.fractions, "bench ep");
  const int G = world.size();
  const int64_t T = opt.tokens;
  for (const ShapeCase& s : shapes) {
    MoeConfig vc = make_config(s, false), pc = make_config(s, true);
    vc.training = pc.training = true;  // backward; no capacity: dropless
    ExpertParallelFfn::experts_per_rank(vc, G);  // --ep-size must divide the FFN experts: fail early
    MoeParams vp = MoeParams::zeros(vc), pp = MoeParams::zeros(pc);
    vp.init_random(vc, 1, 0.02f);
    pp.init_random(pc, 1, 0.02f);
    const int64_t per = vc.n_ffn() / G, first = world.rank() * per;
    for (int64_t e = 0; e < vc.n_ffn(); ++e) {
      if (e >= first && e < first + per) {
        pp.up[e] = vp.up[e];
        pp.down[e] = vp.down[e];
      } else {  // only this rank's experts exist here
        vp.up[e] = vp.down[e] = pp.up[e] = pp.down[e] = Tensor();
      }
    }
    const Tensor probe = random_tokens(T, s.d, 3);  // the same on every rank: the same router bias
    const Tensor x = random_tokens(T, s.d, 100 + world.rank());
    Tensor dy({T, s.d});
    std::mt19937 rng(7 + world.rank());
    std::normal_distribution<float> n01;
    for (float& v : dy.data) v = n01(rng);
    for (double target : fractions) {
      const float b = bias_for_fraction(pc, pp, probe, target);
      for (int64_t e = pc.n_ffn(); e < pc.n_experts; ++e) pp.wg.data[e * s.d] = b;
      Pass v, p;
      run_pass(v, vc, vp, x, dy, world);  // warm-up
      run_pass(p, pc, pp, x, dy, world);
      v = Pass();
      p = Pass();
      for (int r = 0; r < opt.reps; ++r) {
        run_pass(v, vc, vp, x, dy, world);
        run_pass(p, pc, pp, x, dy, world);
      }
      if (world.rank() != 0) continue;
      const nlohmann::json jv = side(v, vc), jp = side(p, pc);
      const double f = p.ffn_rows / p.slots;
      const double balanced = static_cast<double>(T) * G * 2.0 * vc.top_k * f * s.d * 4.0 * (G - 1) / G;
      nlohmann::json r = {{"bench", "ep"},
                          {"shape", s.name},
                          {"ranks", G},
                          {"ep_size", G},
                          {"tokens_per_rank", T},
                          {"target_ffn_slot_fraction", target},
                          {"moe", jv},
                          {"moepp", jp},
                          {"bytes_ratio_moepp_vs_moe", jp["bytes_fwd"].get<double>() /
                                                           std::max(1.0, jv["bytes_fwd"].get<double>())},
                          {"ffn_slot_fraction", f},
                          {"moepp_bytes_fwd_balanced_model", balanced},
                          {"fwd_bwd_speedup", (jv["fwd_ms"].get<double>() + jv["bwd_ms"].get<double>()) /
                                                  (jp["fwd_ms"].get<double>() + jp["bwd_ms"].get<double>())}};
      r.update(bench_environment());
      std::printf("%s\n", r.dump().c_str());
      std::fflush(stdout);
    }
  }
  return 0;
}

}  // namespace moepp
