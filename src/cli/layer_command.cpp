// `moepp layer`: the golden I/O of one MoE++ layer (docs/layer.md, "Golden I/O"). Reads a config,
// weights and inputs, runs forward (and backward when grad_y is given) and writes every output and
// gradient to a safetensors file, so that any reference implementation can check this engine.
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include "cli/commands.h"
#include "core/error.h"
#include "io/json_file.h"
#include "io/safetensors.h"
#include "model/ignored_buffers.h"
#include "moe/moe_layer.h"

namespace moepp::cli {
namespace {

struct LayerArgs {
  std::string config, weights, inputs, out;
};

Tensor read_input(const io::SafetensorsFile& f, const std::string& name, const std::vector<int64_t>& shape) {
  Tensor t = f.read_f32(name);
  if (t.shape != shape)
    throw Error(f.path() + ": tensor '" + name + "' has shape " + shape_str(t.shape) + ", expected " + shape_str(shape));
  return t;
}

void run_layer(const LayerArgs& a) {
  const MoeConfig cfg = MoeConfig::from_json(io::read_json_file(a.config, "the config file"), a.config);
  const MoeLayer layer(cfg);
  const int64_t D = cfg.hidden, E = cfg.n_experts;

  // Weights: exactly the tensors the config needs (gate_map may be absent in layer 0).
  io::SafetensorsFile wf(a.weights);
  MoeParams params = MoeParams::zeros(cfg);
  std::set<std::string> loaded;
  for (auto& [name, t] : params.named(cfg)) {
    if (!wf.contains(name)) {
      if (name == "gate.gate_map.weight" && cfg.layer_index == 0) continue;
      throw Error(a.weights + ": missing tensor '" + name + "'");
    }
    Tensor v = wf.read_f32(name);
    if (v.shape != t->shape)
      throw Error(a.weights + ": tensor '" + name + "' has shape " + shape_str(v.shape) + ", expected " + shape_str(t->shape));
    *t = std::move(v);
    loaded.insert(name);
  }
  check_no_unexpected_tensors(wf.names(), loaded, a.weights);

  // Inputs.
  io::SafetensorsFile inf(a.inputs);
  for (const std::string& name : inf.names())
    if (name != "x" && name != "gate_residual" && name != "grad_y" && name != "grad_router_logits")
      throw Error(a.inputs + ": unexpected tensor '" + name + "' (expected x, gate_residual, grad_y, grad_router_logits)");
  if (!inf.contains("x")) throw Error(a.inputs + ": missing tensor 'x'");
  const Tensor x0 = inf.read_f32("x");
  if (x0.shape.size() != 2 || x0.shape[1] != D)
    throw Error(a.inputs + ": tensor 'x' has shape " + shape_str(x0.shape) + ", expected [T, " + std::to_string(D) + "]");
  const int64_t T = x0.shape[0];
  Tensor z_prev;
  const bool use_zp = cfg.uses_residual();
  if (use_zp) {
    if (!inf.contains("gate_residual"))
      throw Error(a.inputs + ": missing tensor 'gate_residual' (the gating residual is on and layer_index = " +
                  std::to_string(cfg.layer_index) + ")");
    z_prev = read_input(inf, "gate_residual", {T, E});
  } else if (inf.contains("gate_residual")) {
    throw Error(a.inputs + ": tensor 'gate_residual' given but this layer uses no gating residual");
  }
  const bool backward = inf.contains("grad_y");
  Tensor dy, dz_out;
  if (backward) dy = read_input(inf, "grad_y", {T, D});
  if (inf.contains("grad_router_logits")) {
    if (!backward) throw Error(a.inputs + ": 'grad_router_logits' needs 'grad_y'");
    dz_out = read_input(inf, "grad_router_logits", {T, E});
  }

  MoeForwardState st;
  Tensor y, z;
  layer.forward(y, z, st, x0, use_zp ? &z_prev : nullptr, params);

  io::SafetensorsWriter out;
  out.add_f32("y", y);
  out.add_f32("router_logits", z);
  const int64_t W = st.W;
  std::vector<int32_t> kept(st.kept.begin(), st.kept.end());
  out.add_i32("topk_ids", {T, W}, st.ids.data());
  out.add_f32("topk_weights", {T, W}, st.w.data());
  out.add_i32("slot_kept", {T, W}, kept.data());
  if (cfg.training) out.add_f32("aux_loss", {1}, &st.aux_loss);

  if (backward) {
    MoeParams grads = MoeParams::zeros(cfg);
    MoeBackwardScratch sc;
    Tensor dx, dzp;
    layer.backward(dx, use_zp ? &dzp : nullptr, grads, sc, dy, dz_out.empty() ? nullptr : &dz_out, st, params);
    out.add_f32("grad.x", dx);
    if (use_zp) out.add_f32("grad.gate_residual", dzp);
    for (auto& [name, t] : grads.named(cfg))
      if (loaded.count(name)) out.add_f32("grad." + name, *t);
  }
  out.write(a.out);
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
