// The whole model's training pass with the batch split over the ranks and the FFN experts split over
// expert-parallel groups (np 1, 2, 4), against one process on the whole batch: the loss (the ranks'
// parts summed), the aux loss, the global gradient norm within 1e-5 relative and every gradient within
// 1e-4 (dense ones summed over all ranks, expert ones over the expert's replicas).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <memory>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <vector>

#include "comm/comm.h"
#include "model/model.h"
#include "moe/expert_parallel.h"
#include "mpi_test_env.h"

namespace moepp {
namespace {

double rel_err(const Tensor& a, const Tensor& b) {
  double d = 0.0, m = 1.0;
  for (size_t i = 0; i < b.numel(); ++i) {
    d = std::max(d, std::fabs(static_cast<double>(a.data[i]) - b.data[i]));
    m = std::max(m, std::fabs(static_cast<double>(b.data[i])));
  }
  return d / m;
}

double sum_sq(const Tensor& t) {
  double s = 0.0;
  for (float v : t.data) s += static_cast<double>(v) * v;
  return s;
}

struct ModelCase {
  std::string name;
  bool capacity;
  int ep_size;  // 0: all ranks
};

class ModelParallelPass : public ::testing::TestWithParam<ModelCase> {};

TEST_P(ModelParallelPass, EqualsOneProcessOnTheWholeBatch) {
  const ModelCase& c = GetParam();
  Comm& world = world_comm();
  const int P = world.size(), me = world.rank();
  const int G = c.ep_size > 0 ? std::min(c.ep_size, P) : P;
  if (P % G != 0) GTEST_SKIP();
  std::unique_ptr<Comm> ep = world.split(me / G, me), replicas = world.split(me % G, me);

  nlohmann::json j = {{"vocab_size", 41},         {"hidden_size", 16},       {"intermediate_size", 24},
                      {"num_hidden_layers", 2},    {"num_attention_heads", 2}, {"max_position_embeddings", 32},
                      {"num_experts", {8}},        {"moe_2layer_gate", false}, {"moe_use_logits_norm", true},
                      {"moe_feature_no_mul_topk", true}, {"moe_aux_loss_coef", 0.1}};
  if (c.capacity) j["moe_capacity_factor"] = 0.9;
  const ModelConfig cfg = ModelConfig::from_json(j, "test");
  ModelParams p = ModelParams::zeros(cfg);
  p.init_random(cfg, 5, 0.3f);
  const int64_t B = 5, T = 12;
  std::mt19937 rng(9);
  std::vector<int32_t> tokens(B * T), targets(B * T);
  for (int32_t& t : tokens) t = static_cast<int32_t>(rng() % cfg.vocab);
  for (int32_t& t : targets) t = rng() % 7 == 0 ? -1 : static_cast<int32_t>(rng() % cfg.vocab);

  // One process, the whole batch.
  const Model ref_model(cfg);
  ModelState rs;
  ModelParams g_ref = ModelParams::zeros(cfg);
  const float loss_ref = ref_model.forward(rs, tokens.data(), targets.data(), B, T, p, true);
  ref_model.backward(g_ref, rs, p);

  // This rank's sequences and experts.
  const int64_t b0 = B * me / P, b1 = B * (me + 1) / P;
  const int64_t per = ExpertParallelFfn::experts_per_rank(cfg.moe, G), first = ep->rank() * per;
  ModelParams mine = p;
  for (auto& l : mine.layers)
    for (int64_t e = 0; e < cfg.moe.n_ffn(); ++e)
      if (e < first || e >= first + per) l.moe.up[e] = l.moe.down[e] = Tensor();
  Model model(cfg);
  model.set_parallel({&world, ep.get()});
  ModelState st;
  ModelParams g = ModelParams::zeros(cfg);
  double loss = model.forward(st, tokens.data() + b0 * T, targets.data() + b0 * T, b1 - b0, T, mine, true);
  model.backward(g, st, mine);
  world.allreduce_sum(&loss, 1);
  EXPECT_NEAR(loss, loss_ref, 1e-5 * std::fabs(loss_ref)) << "loss";
  EXPECT_NEAR(st.aux_loss_sum, rs.aux_loss_sum, 1e-5 * std::max(1.0f, std::fabs(rs.aux_loss_sum))) << "aux loss";

  // Gradients: dense summed over all ranks, experts over their replicas; the global norm.
  double norm_sq = 0.0, norm_ref_sq = 0.0, expert_sq = 0.0;
  auto named = g.named(cfg);
  auto named_ref = g_ref.named(cfg);
  for (size_t i = 0; i < named.size(); ++i) {
    Tensor& t = *named[i].second;
    const Tensor& r = *named_ref[i].second;
    norm_ref_sq += sum_sq(r);
    const std::string& name = named[i].first;
    const bool expert = name.find("_proj.weight") != std::string::npos && name.find(".experts.experts.") != std::string::npos;
    if (expert) {
      const size_t at = name.find(".experts.experts.") + 17;
      const int64_t e = std::stoll(name.substr(at));
      if (e < first || e >= first + per) continue;
      replicas->allreduce_sum(t.ptr(), static_cast<int64_t>(t.numel()));
      expert_sq += sum_sq(t);
    } else {
      world.allreduce_sum(t.ptr(), static_cast<int64_t>(t.numel()));
      norm_sq += sum_sq(t);
    }
    EXPECT_LE(rel_err(t, r), 1e-4) << name;
  }
  ep->allreduce_sum(&expert_sq, 1);
  norm_sq += expert_sq;
  EXPECT_NEAR(std::sqrt(norm_sq), std::sqrt(norm_ref_sq), 1e-5 * std::sqrt(norm_ref_sq)) << "gradient norm";
}

INSTANTIATE_TEST_SUITE_P(Cases, ModelParallelPass,
                         ::testing::Values(ModelCase{"dropless", false, 0}, ModelCase{"capacity", true, 0},
                                           ModelCase{"ep2_data_parallel_replicas", true, 2}),
                         [](const ::testing::TestParamInfo<ModelCase>& i) { return i.param.name; });

}  // namespace
}  // namespace moepp
