// Reading and writing the golden I/O files of one MoE++ layer (see layer_files.h).
#include "cli/layer_files.h"

#include "core/error.h"
#include "io/json_file.h"
#include "io/safetensors.h"
#include "model/ignored_buffers.h"

namespace moepp::cli {
namespace {

Tensor read_input(const io::SafetensorsFile& f, const std::string& name, const std::vector<int64_t>& shape) {
  Tensor t = f.read_f32(name);
  if (t.shape != shape)
    throw Error(f.path() + ": tensor '" + name + "' has shape " + shape_str(t.shape) + ", expected " + shape_str(shape));
  return t;
}

}  // namespace

LayerFiles read_layer_files(const std::string& config, const std::string& weights, const std::string& inputs) {
  LayerFiles f;
  f.cfg = MoeConfig::from_json(io::read_json_file(config, "the config file"), config);
  const MoeConfig& cfg = f.cfg;
  const int64_t D = cfg.hidden, E = cfg.n_experts;

  // Weights: exactly the tensors the config needs (gate_map may be absent in layer 0).
  io::SafetensorsFile wf(weights);
  f.params = MoeParams::zeros(cfg);
  for (auto& [name, t] : f.params.named(cfg)) {
    if (!wf.contains(name)) {
      if (name == "gate.gate_map.weight" && cfg.layer_index == 0) continue;
      throw Error(weights + ": missing tensor '" + name + "'");
    }
    Tensor v = wf.read_f32(name);
    if (v.shape != t->shape)
      throw Error(weights + ": tensor '" + name + "' has shape " + shape_str(v.shape) + ", expected " + shape_str(t->shape));
    *t = std::move(v);
    f.loaded.insert(name);
  }
  check_no_unexpected_tensors(wf.names(), f.loaded, weights);

  // Inputs.
  io::SafetensorsFile inf(inputs);
  for (const std::string& name : inf.names())
    if (name != "x" && name != "gate_residual" && name != "grad_y" && name != "grad_router_logits")
      throw Error(inputs + ": unexpected tensor '" + name + "' (expected x, gate_residual, grad_y, grad_router_logits)");
  if (!inf.contains("x")) throw Error(inputs + ": missing tensor 'x'");
  f.x = inf.read_f32("x");
  if (f.x.shape.size() != 2 || f.x.shape[1] != D)
    throw Error(inputs + ": tensor 'x' has shape " + shape_str(f.x.shape) + ", expected [T, " + std::to_string(D) + "]");
  const int64_t T = f.x.shape[0];
  if (cfg.uses_residual()) {
    if (!inf.contains("gate_residual"))
      throw Error(inputs + ": missing tensor 'gate_residual' (the gating residual is on and layer_index = " +
                  std::to_string(cfg.layer_index) + ")");
    f.z_prev = read_input(inf, "gate_residual", {T, E});
  } else if (inf.contains("gate_residual")) {
    throw Error(inputs + ": tensor 'gate_residual' given but this layer uses no gating residual");
  }
  f.backward = inf.contains("grad_y");
  if (f.backward) f.dy = read_input(inf, "grad_y", {T, D});
  if (inf.contains("grad_router_logits")) {
    if (!f.backward) throw Error(inputs + ": 'grad_router_logits' needs 'grad_y'");
    f.dz_out = read_input(inf, "grad_router_logits", {T, E});
  }
  return f;
}

void write_layer_results(const std::string& path, const LayerFiles& in, const LayerResults& r) {
  const MoeConfig& cfg = in.cfg;
  const int64_t T = in.T();
  io::SafetensorsWriter out;
  out.add_f32("y", r.y);
  out.add_f32("router_logits", r.router_logits);
  out.add_i32("topk_ids", {T, r.W}, r.ids.data());
  out.add_f32("topk_weights", {T, r.W}, r.w.data());
  out.add_i32("slot_kept", {T, r.W}, r.kept.data());
  if (cfg.training) out.add_f32("aux_loss", {1}, &r.aux_loss);
  if (in.backward) {
    out.add_f32("grad.x", r.dx);
    if (cfg.uses_residual()) out.add_f32("grad.gate_residual", r.dz_prev);
    for (const auto& [name, t] : r.grads.named(cfg))
      if (in.loaded.count(name)) out.add_f32("grad." + name, *t);
  }
  out.write(path);
}

}  // namespace moepp::cli
