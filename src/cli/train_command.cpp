// `moepp train`: a training run from a JSON config, resumable (docs/training.md). (`moepp generate`
// lives in generate_command.cpp.)
#include <memory>
#include <string>

#include "cli/commands.h"
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
}

}  // namespace moepp::cli
