// `moepp train` (a training run from a JSON config, resumable) and `moepp generate` (sample text
// from a checkpoint or run directory).
#include <cstdio>
#include <filesystem>

#include "cli/commands.h"
#include "core/error.h"
#include "infer/generate.h"
#include "io/checkpoint.h"
#include "model/model.h"
#include "tokenizer/tokenizer.h"
#include "train/trainer.h"

namespace moepp::cli {

void register_train_command(CLI::App& app) {
  struct Args {
    std::string config, out;
    bool resume = false, quiet = false;
    int64_t steps = 0, stop_after = -1, seed = -1;
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
  sub->callback([a] {
    TrainConfig cfg = TrainConfig::from_file(a->config);
    if (a->steps > 0) cfg.steps = a->steps;
    if (a->seed >= 0) cfg.seed = static_cast<uint64_t>(a->seed);
    TrainOptions opt{a->out, a->resume, a->stop_after, a->quiet};
    train(cfg, opt);
  });

  struct GenArgs {
    std::string model, prompt;
    int64_t max_tokens = 60, top_k = 40, seed = 1;
    float temperature = 0.8f;
  };
  auto g = std::make_shared<GenArgs>();
  CLI::App* gen = app.add_subcommand("generate", "Generate text from a checkpoint (full recompute per token; no KV cache yet)");
  gen->add_option("--model", g->model, "checkpoint directory, or a run directory (its latest checkpoint)")->required();
  gen->add_option("--prompt", g->prompt, "prompt text")->required();
  gen->add_option("--max-tokens", g->max_tokens, "tokens to generate")->capture_default_str();
  gen->add_option("--temperature", g->temperature, "0 = greedy")->capture_default_str();
  gen->add_option("--top-k", g->top_k, "sample among the k most likely (0 = all)")->capture_default_str();
  gen->add_option("--seed", g->seed, "sampling seed")->capture_default_str();
  gen->callback([g] {
    check(g->max_tokens >= 0, "generate: --max-tokens must be >= 0");
    check(g->temperature >= 0.0f, "generate: --temperature must be >= 0");
    check(g->top_k >= 0, "generate: --top-k must be >= 0");
    const std::string dir = resolve_model_dir(g->model);
    auto [mc, params] = io::load_model(dir);
    const std::string tok_path = (std::filesystem::path(dir) / "tokenizer.model").string();
    check(std::filesystem::exists(tok_path), dir + ": no tokenizer.model");
    const Tokenizer tok(tok_path);
    const Model model(mc);
    std::vector<int32_t> prompt = {mc.bos};
    for (int32_t id : tok.encode(g->prompt)) prompt.push_back(id);
    SampleOptions so;
    so.max_new_tokens = g->max_tokens;
    so.temperature = g->temperature;
    so.top_k = g->top_k;
    so.seed = static_cast<uint64_t>(g->seed);
    const std::vector<int32_t> out = generate(model, params, prompt, so);
    std::printf("%s\n", tok.decode(std::vector<int32_t>(out.begin() + 1, out.end())).c_str());
  });
}

}  // namespace moepp::cli
