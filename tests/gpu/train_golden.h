// The 5-step training golden file of the GPU tests (tests/gpu/data/train_golden.json): the run it
// describes (a small MoE++ model config, the weights' seed, one batch, AdamW, the lr schedule,
// clipping) and what the CPU engine computed for it (loss, aux loss and gradient norm of each step,
// and checksums of the initial and final weights). The GPU-only build has no CPU model, so its
// training-step test compares GpuTrainer with this file; the full build regenerates it from the CPU
// engine (test_gpu_model.cpp, MOEPP_WRITE_TRAIN_GOLDEN=<path>) and checks that the committed file
// still matches the CPU engine.
#pragma once

#include <cstdint>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "model/model_config.h"
#include "model/model_params.h"
#include "train/adamw.h"
#include "train/lr_schedule.h"

namespace moepp::gpu::test {

#ifndef MOEPP_GPU_TEST_DATA
#error "MOEPP_GPU_TEST_DATA (tests/gpu/data) must be defined"
#endif
inline const std::string kTrainGoldenPath = std::string(MOEPP_GPU_TEST_DATA) + "/train_golden.json";

struct TrainGolden {
  ModelConfig cfg;
  uint64_t seed = 0;
  float init_std = 0.0f;
  int64_t B = 0, T = 0;
  std::vector<int32_t> inputs, targets;  // [B*T]
  AdamWConfig adam;
  LrSchedule sched;
  float grad_clip = 0.0f;
  // Results (one entry per step) and weight checksums (sum and sum of squares, in double).
  std::vector<double> loss, aux, gnorm;
  double init_sum = 0, init_sumsq = 0, final_sum = 0, final_sumsq = 0;
};

// The run the committed file describes (what a regeneration writes, before the results).
inline TrainGolden train_golden_spec() {
  TrainGolden g;
  const nlohmann::json j = {{"vocab_size", 64},          {"hidden_size", 32},         {"intermediate_size", 24},
                            {"num_hidden_layers", 2},    {"num_attention_heads", 4},  {"num_key_value_heads", 2},
                            {"max_position_embeddings", 32}, {"num_experts", {8}},   {"n_zero_experts", 1},
                            {"n_copy_experts", 1},       {"n_constant_experts", 2},   {"moe_top_k", 2},
                            {"moe_aux_loss_coef", 0.01}, {"moe_gating_residual", true}, {"moe_router", "moepp"}};
  g.cfg = ModelConfig::from_json(j, "train_golden");
  g.seed = 7;
  g.init_std = 0.1f;
  g.B = 2;
  g.T = 13;  // not a multiple of any block size
  for (int64_t n = 0; n < g.B * g.T; ++n) {
    g.inputs.push_back(static_cast<int32_t>((n * 37 + 11) % 64));
    g.targets.push_back(n % 9 == 4 ? -1 : static_cast<int32_t>((n * 23 + 5) % 64));
  }
  g.adam = AdamWConfig{0.9f, 0.95f, 1e-8f, 0.1f};
  g.sched.init_lr = 1e-4f;
  g.sched.peak_lr = 1e-2f;
  g.sched.min_lr = 1e-3f;
  g.sched.warmup_steps = 2;
  g.sched.total_steps = 5;
  g.grad_clip = 0.5f;
  return g;
}

inline void weight_checksums(const ModelParams& p, const ModelConfig& cfg, double* sum, double* sumsq) {
  *sum = *sumsq = 0.0;
  for (const auto& [name, t] : p.named(cfg))
    for (float x : t->data) {
      *sum += x;
      *sumsq += static_cast<double>(x) * x;
    }
}

inline nlohmann::json train_golden_to_json(const TrainGolden& g) {
  return {{"comment", "5 AdamW steps of the CPU engine on one batch: tests/gpu/train_golden.h"},
          {"config", g.cfg.to_json()},
          {"seed", g.seed},
          {"init_std", g.init_std},
          {"B", g.B},
          {"T", g.T},
          {"inputs", g.inputs},
          {"targets", g.targets},
          {"adam", {{"beta1", g.adam.beta1}, {"beta2", g.adam.beta2}, {"eps", g.adam.eps},
                    {"weight_decay", g.adam.weight_decay}}},
          {"schedule", {{"init_lr", g.sched.init_lr}, {"peak_lr", g.sched.peak_lr}, {"min_lr", g.sched.min_lr},
                        {"warmup_steps", g.sched.warmup_steps}, {"total_steps", g.sched.total_steps},
                        {"cosine", g.sched.cosine}}},
          {"grad_clip", g.grad_clip},
          {"loss", g.loss},
          {"aux", g.aux},
          {"gnorm", g.gnorm},
          {"init_sum", g.init_sum},
          {"init_sumsq", g.init_sumsq},
          {"final_sum", g.final_sum},
          {"final_sumsq", g.final_sumsq}};
}

inline TrainGolden read_train_golden(const std::string& path) {
  std::ifstream f(path);
  check(f.good(), "cannot open " + path);
  std::stringstream ss;
  ss << f.rdbuf();
  const nlohmann::json j = nlohmann::json::parse(ss.str());
  TrainGolden g;
  g.cfg = ModelConfig::from_json(j.at("config"), path);
  g.seed = j.at("seed").get<uint64_t>();
  g.init_std = j.at("init_std").get<float>();
  g.B = j.at("B").get<int64_t>();
  g.T = j.at("T").get<int64_t>();
  g.inputs = j.at("inputs").get<std::vector<int32_t>>();
  g.targets = j.at("targets").get<std::vector<int32_t>>();
  const nlohmann::json& a = j.at("adam");
  g.adam = AdamWConfig{a.at("beta1").get<float>(), a.at("beta2").get<float>(), a.at("eps").get<float>(),
                       a.at("weight_decay").get<float>()};
  const nlohmann::json& s = j.at("schedule");
  g.sched.init_lr = s.at("init_lr").get<float>();
  g.sched.peak_lr = s.at("peak_lr").get<float>();
  g.sched.min_lr = s.at("min_lr").get<float>();
  g.sched.warmup_steps = s.at("warmup_steps").get<int64_t>();
  g.sched.total_steps = s.at("total_steps").get<int64_t>();
  g.sched.cosine = s.at("cosine").get<bool>();
  g.grad_clip = j.at("grad_clip").get<float>();
  g.loss = j.at("loss").get<std::vector<double>>();
  g.aux = j.at("aux").get<std::vector<double>>();
  g.gnorm = j.at("gnorm").get<std::vector<double>>();
  g.init_sum = j.at("init_sum").get<double>();
  g.init_sumsq = j.at("init_sumsq").get<double>();
  g.final_sum = j.at("final_sum").get<double>();
  g.final_sumsq = j.at("final_sumsq").get<double>();
  check(static_cast<int64_t>(g.inputs.size()) == g.B * g.T && g.targets.size() == g.inputs.size(),
        path + ": inputs / targets are not B*T long");
  check(g.loss.size() == g.aux.size() && g.loss.size() == g.gnorm.size() && !g.loss.empty(),
        path + ": loss, aux and gnorm need one entry per step");
  return g;
}

// The initial weights of the run (ModelParams::init_random with the file's seed and std).
inline ModelParams train_golden_weights(const TrainGolden& g) {
  ModelParams p = ModelParams::zeros(g.cfg);
  p.init_random(g.cfg, g.seed, g.init_std);
  return p;
}

}  // namespace moepp::gpu::test
