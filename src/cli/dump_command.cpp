// `moepp dump`: the golden I/O of the whole model. Loads a checkpoint directory, runs one forward pass
// on the given tokens (and the backward when targets are given) and writes logits, every block's router
// logits, the losses and every parameter's gradient to a safetensors file, so that any reference
// implementation can check this engine end to end.
#include <memory>
#include <string>
#include <vector>

#include "cli/commands.h"
#include "core/error.h"
#include "model/checkpoint.h"
#include "io/safetensors.h"
#include "model/model.h"

namespace moepp::cli {
namespace {

struct DumpArgs {
  std::string model, tokens, targets, out;
  bool training = false;
  int64_t batch = 1;
};

std::vector<int32_t> parse_ids(const std::string& text, const std::string& option) {
  std::vector<int32_t> ids;
  size_t i = 0;
  while (i <= text.size()) {
    const size_t j = std::min(text.find(',', i), text.size());
    const std::string item = text.substr(i, j - i);
    size_t used = 0;
    long long v = 0;
    try {
      v = std::stoll(item, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    if (item.empty() || used != item.size() || v < INT32_MIN || v > INT32_MAX)
      throw Error(option + ": '" + item + "' is not an integer (expected a comma-separated list like 1,2,3)");
    ids.push_back(static_cast<int32_t>(v));
    i = j + 1;
  }
  return ids;
}

void run_dump(const DumpArgs& a) {
  auto [cfg, params] = load_model(a.model);
  const Model model(cfg);
  const std::vector<int32_t> tokens = parse_ids(a.tokens, "--tokens");
  std::vector<int32_t> targets;
  if (!a.targets.empty()) {
    targets = parse_ids(a.targets, "--targets");
    if (targets.size() != tokens.size())
      throw Error("--targets has " + std::to_string(targets.size()) + " ids, --tokens " +
                  std::to_string(tokens.size()));
  }
  const int64_t n = static_cast<int64_t>(tokens.size());
  if (a.batch < 1 || n % a.batch != 0)
    throw Error("--batch " + std::to_string(a.batch) + " must be >= 1 and divide the " + std::to_string(n) + " tokens");
  const int64_t B = a.batch, T = n / B;

  ModelState st;
  st.keep_logits = true;
  const bool backward = !targets.empty();
  const float loss =
      model.forward(st, tokens.data(), backward ? targets.data() : nullptr, B, T, params, a.training);

  io::SafetensorsWriter out;
  out.add_f32("logits", st.logits);
  for (int64_t i = 0; i < cfg.n_layers; ++i) out.add_f32("router_logits." + std::to_string(i), st.layers[i].z);
  if (backward) {
    out.add_f32("loss", {1}, &loss);
    out.add_f32("aux_loss", {1}, &st.aux_loss_sum);
    ModelParams grads = ModelParams::zeros(cfg);
    model.backward(grads, st, params);
    for (const auto& [name, t] : grads.named(cfg)) out.add_f32("grad." + name, *t);
  }
  out.write(a.out);
}

}  // namespace

void register_dump_command(CLI::App& app) {
  auto args = std::make_shared<DumpArgs>();
  CLI::App* sub = app.add_subcommand("dump", "Run the whole model on given tokens and dump outputs and gradients");
  sub->add_option("--model", args->model, "checkpoint directory (config.json + model.safetensors)")->required();
  sub->add_option("--tokens", args->tokens, "comma-separated token ids")->required();
  sub->add_option("--targets", args->targets, "comma-separated target ids (-1 = ignored); turns on the backward");
  sub->add_flag("--training", args->training, "training mode: balance loss (aux_loss) and capacity");
  sub->add_option("--batch", args->batch, "split the tokens into this many sequences of equal length (default 1)");
  sub->add_option("--out", args->out, "output safetensors")->required();
  sub->callback([args] { run_dump(*args); });
}

}  // namespace moepp::cli
