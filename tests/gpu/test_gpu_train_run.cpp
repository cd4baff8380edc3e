// Tests of `moepp train --device cuda`'s path (full build: they run the CPU trainer): the trainer's step
// backend hook (train/step_backend.h) and the GPU backend (src/cli/gpu_step_backend.cpp). On any
// machine: a backend is refused where it cannot run (grad_accum > 1, expert parallelism) before any
// work; a backend that runs the CPU engine's step gives the CPU run's log (every step's loss, gradient
// norm, lr, evaluation) exactly, also when stopped and resumed half-way (the sync before checkpoints and
// the resumed state reach the backend). On a GPU: the GPU backend's run against the CPU run (loss and
// gradient norm of every step and the validation loss within 1e-3 relative: 6 AdamW steps at lr 3e-3
// on text, an estimate the first GPU run confirms), and `--device` / `--precision` errors.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "cli/gpu_step_backend.h"
#include "core/error.h"
#include "gpu_test_util.h"
#include "model/model.h"
#include "train/trainer.h"

namespace moepp {
namespace {

namespace fs = std::filesystem;

// A temporary run setup: the first 60,000 characters of data/slice/train.txt split 9:1 by document, and
// a training config of a tiny MoE++ model on it.
struct RunSetup {
  fs::path dir;
  TrainConfig cfg;
  explicit RunSetup(const std::string& name) {
    dir = fs::temp_directory_path() / ("moepp_gpu_train_run_" + name + "_" + std::to_string(::getpid()));
    fs::remove_all(dir);
    fs::create_directories(dir);
    std::ifstream f(std::string(MOEPP_SOURCE_DIR) + "/data/slice/train.txt");
    std::string text(60000, '\0');
    f.read(text.data(), static_cast<std::streamsize>(text.size()));
    text.resize(static_cast<size_t>(f.gcount()));
    const size_t cut = text.find("\n\n", text.size() * 9 / 10);
    std::ofstream(dir / "train.txt") << text.substr(0, cut);
    std::ofstream(dir / "valid.txt") << text.substr(cut == std::string::npos ? 0 : cut + 2);
    const nlohmann::json j = {
        {"model", {{"hidden_size", 32}, {"intermediate_size", 48}, {"num_hidden_layers", 2}, {"num_attention_heads", 4},
                   {"num_key_value_heads", 2}, {"num_experts", {8}}, {"n_zero_experts", 1}, {"n_copy_experts", 1},
                   {"n_constant_experts", 2}, {"moe_top_k", 2}, {"max_position_embeddings", 64},
                   {"moe_2layer_gate", false}, {"moe_gating_residual", true}}},
        {"train_text", (dir / "train.txt").string()}, {"valid_text", (dir / "valid.txt").string()},
        {"tokenizer_vocab", 512}, {"batch_size", 4}, {"seq_len", 32}, {"steps", 6}, {"lr", 3e-3},
        {"min_lr", 3e-4}, {"warmup_steps", 2}, {"eval_every", 3}, {"eval_batches", 2}, {"ckpt_every", 3},
        {"sample_tokens", 0}};
    cfg = TrainConfig::from_json(j, "test");
  }
  ~RunSetup() { fs::remove_all(dir); }
  std::string out(const std::string& name) const { return (dir / name).string(); }
};

std::vector<nlohmann::json> read_log(const std::string& out) {
  std::ifstream f(fs::path(out) / "log.jsonl");
  std::vector<nlohmann::json> v;
  for (std::string line; std::getline(f, line);)
    if (!line.empty()) v.push_back(nlohmann::json::parse(line));
  return v;
}

// The CPU engine's step behind the backend interface: what train_step does for one process and one
// micro-batch, on the backend's own copy of the weights and optimizer state.
class CpuBackend : public StepBackend {
 public:
  void start(const ModelConfig& mc, const ModelParams& params, const AdamW& adam, const AdamWConfig& ac,
             const LrSchedule& sched, float grad_clip) override {
    ++starts;
    mc_ = mc;
    model_ = std::make_unique<Model>(mc);
    params_ = params;
    grads_ = ModelParams::zeros(mc);
    std::vector<ParamRef> refs;
    for (const ParamSpec& spec : param_specs(mc)) refs.push_back({spec.name, params_.slot(spec), grads_.slot(spec)});
    adam_ = std::make_unique<AdamW>(refs, ac);
    adam_->m() = adam.m();
    adam_->v() = adam.v();
    adam_->set_steps(adam.steps());
    sched_ = sched;
    clip_ = grad_clip;
  }
  BackendStepStats step(const int32_t* inputs, const int32_t* targets, int64_t B, int64_t T) override {
    grads_.zero();
    BackendStepStats s;
    s.loss = model_->forward(st_, inputs, targets, B, T, params_, true);
    s.aux = st_.aux_loss_sum;
    model_->backward(grads_, st_, params_);
    s.gnorm = grad_norm(adam_->params());
    s.lr = sched_.at(adam_->steps());
    adam_->step(s.lr, clip_scale(s.gnorm, clip_));
    for (float f : st_.ffn_experts_per_token) s.ffn.push_back(f);
    return s;
  }
  void sync_to_host(ModelParams& params, AdamW& adam) override {
    ++syncs;
    params = params_;
    adam.m() = adam_->m();
    adam.v() = adam_->v();
    adam.set_steps(adam_->steps());
  }
  int starts = 0, syncs = 0;

 private:
  ModelConfig mc_;
  std::unique_ptr<Model> model_;
  ModelParams params_, grads_;
  std::unique_ptr<AdamW> adam_;
  ModelState st_;
  LrSchedule sched_;
  float clip_ = 0.0f;
};

// A backend that must not be reached.
class UnreachableBackend : public StepBackend {
 public:
  void start(const ModelConfig&, const ModelParams&, const AdamW&, const AdamWConfig&, const LrSchedule&,
             float) override {
    ADD_FAILURE() << "start reached";
  }
  BackendStepStats step(const int32_t*, const int32_t*, int64_t, int64_t) override {
    ADD_FAILURE() << "step reached";
    return {};
  }
  void sync_to_host(ModelParams&, AdamW&) override { ADD_FAILURE() << "sync reached"; }
};

void expect_logs_close(const std::vector<nlohmann::json>& got, const std::vector<nlohmann::json>& want, double rel) {
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < want.size(); ++i)
    for (const char* k : {"loss", "grad_norm", "lr", "aux_loss", "val_loss"}) {
      if (!want[i].contains(k)) continue;
      ASSERT_TRUE(got[i].contains(k)) << k << " at line " << i;
      const double a = got[i][k].get<double>(), b = want[i][k].get<double>();
      EXPECT_LE(std::fabs(a - b), rel * std::max(1.0, std::fabs(b))) << k << " at line " << i << ": " << a << " vs " << b;
    }
}

TEST(TrainStepBackend, IsRefusedWhereItCannotRun) {
  RunSetup r("refused");
  UnreachableBackend b;
  TrainConfig cfg = r.cfg;
  cfg.grad_accum = 2;
  TrainOptions o;
  o.out_dir = r.out("accum");
  o.quiet = true;
  o.backend = &b;
  EXPECT_THROW(train(cfg, o), Error);
  o.ep_size = 2;
  EXPECT_THROW(train(r.cfg, o), Error);
  EXPECT_FALSE(fs::exists(o.out_dir));  // refused before any work
}

TEST(TrainStepBackend, ACpuBackendGivesTheCpuRunAlsoWhenResumed) {
  RunSetup r("cpu");
  TrainOptions o;
  o.quiet = true;
  o.out_dir = r.out("plain");
  const TrainResult want = train(r.cfg, o);
  CpuBackend b;
  o.out_dir = r.out("backend");
  o.backend = &b;
  const TrainResult got = train(r.cfg, o);
  EXPECT_EQ(b.starts, 1);
  EXPECT_EQ(b.syncs, 2);  // steps 3 and 6: evaluation and checkpoint together
  EXPECT_EQ(got.val_loss, want.val_loss);
  expect_logs_close(read_log(r.out("backend")), read_log(r.out("plain")), 0.0);
  // Stopped after step 3, then resumed to 6, each part on a fresh backend.
  CpuBackend b1, b2;
  o.out_dir = r.out("resumed");
  o.backend = &b1;
  o.stop_after = 3;
  train(r.cfg, o);
  o.backend = &b2;
  o.stop_after = -1;
  o.resume = true;
  const TrainResult res = train(r.cfg, o);
  EXPECT_EQ(res.val_loss, want.val_loss);
  expect_logs_close(read_log(r.out("resumed")), read_log(r.out("plain")), 0.0);
}

TEST(TrainStepBackend, DeviceOptionsAreChecked) {
  EXPECT_EQ(cli::make_step_backend("cpu", "bf16", "per-expert"), nullptr);
  EXPECT_THROW(cli::make_step_backend("tpu", "bf16", "per-expert"), Error);
}

TEST(TrainStepBackend, TheGpuBackendFollowsTheCpuRun) {
  MOEPP_REQUIRE_GPU();
  EXPECT_THROW(cli::make_step_backend("cuda", "f16", "per-expert"), Error);
  RunSetup r("gpu");
  TrainOptions o;
  o.quiet = true;
  o.out_dir = r.out("plain");
  const TrainResult want = train(r.cfg, o);
  const std::unique_ptr<StepBackend> b = cli::make_step_backend("cuda", "f32", "per-expert");
  o.out_dir = r.out("gpu");
  o.backend = b.get();
  const TrainResult got = train(r.cfg, o);
  EXPECT_LE(std::fabs(got.val_loss - want.val_loss), 1e-3 * std::max(1.0f, want.val_loss));
  expect_logs_close(read_log(r.out("gpu")), read_log(r.out("plain")), 1e-3);
}

}  // namespace
}  // namespace moepp
