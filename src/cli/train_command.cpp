// `moepp train`: a training run from a JSON config, resumable (docs/training.md); at the end of a
// completed run, the validation loss and a sample from the final checkpoint. (`moepp generate` lives
// in generate_command.cpp.)
#include <algorithm>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "cli/commands.h"
#include "cli/gpu_step_backend.h"
#include "core/error.h"
#include "infer/engine.h"
#include "infer/model_dir.h"
#include "train/trainer.h"

namespace moepp::cli {
namespace {

// The end-of-training sample: the KV-cache decoder on the run's final checkpoint, temperature 0.8 and
// top-k 40, seeded with the run's seed; the prompt keeps bos and its last tokens when it is too long.
std::string sample_from(const std::string& run_dir, const TrainConfig& cfg) {
  const ModelDir md = open_model_dir(run_dir, "", "train");
  const ModelConfig& mc = md.cfg;
  std::vector<int32_t> prompt = {mc.bos};
  for (int32_t id : md.tok.encode(cfg.sample_prompt)) prompt.push_back(id);
  const int64_t keep = std::min<int64_t>(static_cast<int64_t>(prompt.size()), mc.max_pos - 1);
  prompt.erase(prompt.begin() + 1, prompt.end() - (keep - 1));
  const Decoder dec = load_decoder(md, WeightDType::kF32);
  EngineOptions eo;
  eo.n_slots = 1;
  eo.max_queue = 0;
  eo.max_len = std::min<int64_t>(mc.max_pos, keep + cfg.sample_tokens);
  Engine engine(dec, &md.tok, eo);
  GenerationRequest req;
  req.prompt = prompt;
  req.max_new_tokens = std::min<int64_t>(cfg.sample_tokens, eo.max_len - keep);
  req.sampling.temperature = 0.8f;
  req.sampling.top_k = 40;
  req.sampling.seed = static_cast<uint64_t>(cfg.seed);
  FinishEvent fin;
  GenerationCallbacks cb;
  cb.on_finish = [&fin](const FinishEvent& ev) { fin = ev; };
  engine.submit(std::move(req), std::move(cb));
  while (engine.step()) {
  }
  check(fin.reason != "error", "moepp train: sampling failed: " + fin.error);
  return fin.text;
}

}  // namespace

void register_train_command(CLI::App& app) {
  struct Args {
    std::string config, out;
    bool resume = false, quiet = false;
    int64_t steps = 0, stop_after = -1, seed = -1;
    int ep_size = 1;
    std::string device = "cpu", precision = "bf16", gemm = "per-expert";
  };
  auto a = std::make_shared<Args>();
  CLI::App* sub = app.add_subcommand("train", "Train an MoE++ / MoE language model from a JSON config (docs/training.md)");
  sub->add_option("--config", a->config, "training config JSON (e.g. configs/slice-moepp.json)")->required();
  sub->add_option("--out", a->out, "run directory (tokenizer, shards, log.jsonl, checkpoints)")->required();
  sub->add_flag("--resume", a->resume, "continue from the run directory's latest checkpoint");
  sub->add_option("--steps", a->steps, "override the config's total steps");
  sub->add_option("--seed", a->seed, "override the config's seed");
  sub->add_option("--stop-after", a->stop_after, "stop (with a checkpoint) after this step");
  sub->add_flag("--quiet", a->quiet, "no progress output");
  sub->add_option("--ep-size", a->ep_size,
                  "under mpirun: ranks per expert-parallel group (divides the ranks and the FFN experts; "
                  "default 1: data parallelism only)");
  sub->add_option("--device", a->device,
                  "cpu, or cuda: the steps on the GPU (GpuTrainer, docs/gpu.md; one process, grad_accum 1; "
                  "needs a build with nvcc)")
      ->capture_default_str();
  sub->add_option("--precision", a->precision, "--device cuda: f32 or bf16 products (fp32 master weights)")
      ->capture_default_str();
  sub->add_option("--gemm", a->gemm, "--device cuda: per-expert or grouped expert GEMMs")->capture_default_str();
  sub->callback([a] {
    const std::unique_ptr<StepBackend> backend = make_step_backend(a->device, a->precision, a->gemm);
    TrainConfig cfg = TrainConfig::from_file(a->config);
    if (a->steps > 0) cfg.steps = a->steps;
    if (a->seed >= 0) cfg.seed = static_cast<uint64_t>(a->seed);
    Comm& world = job_comm();
    TrainOptions opt{a->out, a->resume, a->stop_after, a->quiet, &world, a->ep_size, backend.get()};
    const TrainResult r = train(cfg, opt);
    // The sample: rank 0 alone, from the checkpoint (which loads whole in one process).
    if (world.rank() != 0 || a->quiet || !r.completed || cfg.sample_prompt.empty() || cfg.sample_tokens <= 0) return;
    const std::string text = sample_from(a->out, cfg);
    std::printf("val_loss %.4f nats/token, %.4f bits/byte\nsample: %s%s\n", r.val_loss, r.val_bits_per_byte,
                cfg.sample_prompt.c_str(), text.c_str());
  });
}

}  // namespace moepp::cli
