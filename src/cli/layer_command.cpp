// `moepp layer`: the golden I/O of one MoE++ layer (docs/layer.md, "Golden I/O"). Reads a config,
// weights and inputs, runs forward (and backward when grad_y is given) and writes every output and
// gradient to a safetensors file, so that any reference implementation can check this engine.
#include "cli/commands.h"
#include "cli/layer_files.h"
#include "moe/moe_layer.h"

namespace moepp::cli {
namespace {

struct LayerArgs {
  std::string config, weights, inputs, out;
};

void run_layer(const LayerArgs& a) {
  const LayerFiles in = read_layer_files(a.config, a.weights, a.inputs);
  const MoeConfig& cfg = in.cfg;
  const MoeLayer layer(cfg);
  const bool use_zp = cfg.uses_residual();

  MoeForwardState st;
  LayerResults r;
  layer.forward(r.y, r.router_logits, st, in.x, use_zp ? &in.z_prev : nullptr, in.params);
  r.W = st.W;
  r.ids = st.ids;
  r.w = st.w;
  r.kept.assign(st.kept.begin(), st.kept.end());
  r.aux_loss = st.aux_loss;
  if (in.backward) {
    r.grads = MoeParams::zeros(cfg);
    MoeBackwardScratch sc;
    layer.backward(r.dx, use_zp ? &r.dz_prev : nullptr, r.grads, sc, in.dy, in.dz_out.empty() ? nullptr : &in.dz_out, st,
                   in.params);
  }
  write_layer_results(a.out, in, r);
}

}  // namespace

void register_layer_command(CLI::App& app) {
  auto args = std::make_shared<LayerArgs>();
  CLI::App* sub = app.add_subcommand("layer", "Run one MoE++ layer on given weights and inputs (golden I/O)");
  sub->add_option("--config", args->config, "Hugging Face style config.json of the layer")->required();
  sub->add_option("--weights", args->weights, "safetensors with the layer's tensors")->required();
  sub->add_option("--inputs", args->inputs, "safetensors with x [, gate_residual, grad_y, grad_router_logits]")->required();
  sub->add_option("--out", args->out, "output safetensors")->required();
  sub->callback([args] { run_layer(*args); });
}

}  // namespace moepp::cli
