// InferWeights construction from training parameters or a checkpoint, tensor by tensor (see
// infer_weights.h).
#include "infer/infer_weights.h"

#include <map>
#include <set>

#include "core/error.h"
#include "io/weight_source.h"

namespace moepp {
namespace {

// One checkpoint tensor and where it goes: a fp32 tensor, or a WeightMatrix built from fp32 data.
struct Slot {
  std::string name;
  std::vector<int64_t> shape;
  Tensor* dense = nullptr;         // kept fp32
  WeightMatrix* matrix = nullptr;  // converted to the weight dtype
  bool optional = false;           // layer 0's gate_map (never used)
};

// Every tensor of cfg's model, in checkpoint order, with the small fp32 tensors allocated.
std::vector<Slot> plan(InferWeights& w, const ModelConfig& c) {
  const int64_t V = c.vocab, D = c.hidden, Q = c.n_heads * c.head_dim, KV = c.n_kv_heads * c.head_dim;
  std::vector<Slot> s;
  w.embed = Tensor({V, D});
  s.push_back({"model.embed_tokens.weight", {V, D}, &w.embed, nullptr});
  w.layers.assign(c.n_layers, {});
  for (int64_t i = 0; i < c.n_layers; ++i) {
    InferWeights::Layer& l = w.layers[i];
    const MoeConfig mc = c.layer_moe(static_cast<int>(i), false);
    const int64_t E = mc.n_experts, I = mc.intermediate;
    const std::string b = "model.layers." + std::to_string(i) + ".";
    l.attn_norm = Tensor({D});
    l.mlp_norm = Tensor({D});
    s.push_back({b + "input_layernorm.weight", {D}, &l.attn_norm, nullptr});
    s.push_back({b + "self_attn.q_proj.weight", {Q, D}, nullptr, &l.wq});
    s.push_back({b + "self_attn.k_proj.weight", {KV, D}, nullptr, &l.wk});
    s.push_back({b + "self_attn.v_proj.weight", {KV, D}, nullptr, &l.wv});
    s.push_back({b + "self_attn.o_proj.weight", {D, Q}, nullptr, &l.wo});
    s.push_back({b + "post_attention_layernorm.weight", {D}, &l.mlp_norm, nullptr});
    const std::string m = b + "mlp.moe.";
    MoeParams& p = l.moe_small;
    if (mc.two_layer_gate) {
      p.wg0 = Tensor({mc.gate_hidden(), D});
      p.wg2 = Tensor({E, mc.gate_hidden()});
      s.push_back({m + "gate.wg.0.weight", p.wg0.shape, &p.wg0, nullptr});
      s.push_back({m + "gate.wg.2.weight", p.wg2.shape, &p.wg2, nullptr});
    } else {
      p.wg = Tensor({E, D});
      s.push_back({m + "gate.wg.weight", {E, D}, &p.wg, nullptr});
    }
    if (mc.gating_residual) {
      p.gate_map = Tensor({E, E});
      s.push_back({m + "gate.gate_map.weight", {E, E}, &p.gate_map, nullptr, /*optional=*/i == 0});
    }
    l.up.assign(mc.n_ffn(), {});
    l.down.assign(mc.n_ffn(), {});
    for (int64_t e = 0; e < mc.n_ffn(); ++e) {
      const std::string x = m + "experts.experts." + std::to_string(e) + ".";
      s.push_back({x + "up_proj.weight", {2 * I, D}, nullptr, &l.up[e]});
      s.push_back({x + "down_proj.weight", {D, I}, nullptr, &l.down[e]});
    }
    p.const_wg.assign(mc.n_constant, Tensor({2, D}));
    p.const_v.assign(mc.n_constant, Tensor({D}));
    for (int64_t k = 0; k < mc.n_constant; ++k) {
      const std::string x = m + "experts.experts." + std::to_string(mc.first_constant() + k) + ".";
      s.push_back({x + "wg.weight", {2, D}, &p.const_wg[k], nullptr});
      s.push_back({x + "constant", {D}, &p.const_v[k], nullptr});
    }
  }
  w.final_norm = Tensor({D});
  s.push_back({"model.norm.weight", {D}, &w.final_norm, nullptr});
  s.push_back({"lm_head.weight", {V, D}, nullptr, &w.lm_head});
  return s;
}

}  // namespace

InferWeights InferWeights::from_params(const ModelConfig& cfg, const ModelParams& p, WeightDType d) {
  InferWeights w;
  w.dtype = d;
  std::vector<Slot> slots = plan(w, cfg);
  const auto named = p.named(cfg);
  std::map<std::string, const Tensor*> have(named.begin(), named.end());
  for (const Slot& s : slots) {
    auto it = have.find(s.name);
    if (it == have.end() || it->second->empty()) {
      if (s.optional) continue;
      throw Error("InferWeights: the parameters lack '" + s.name + "'");
    }
    const Tensor& t = *it->second;
    check(t.shape == s.shape, "InferWeights: '" + s.name + "' has shape " + shape_str(t.shape) + ", expected " +
                                  shape_str(s.shape));
    if (s.dense) *s.dense = t;
    else *s.matrix = WeightMatrix::from_f32(t.ptr(), s.shape[0], s.shape[1], d);
  }
  return w;
}

InferWeights InferWeights::load(const ModelConfig& cfg, const io::WeightSource& src, WeightDType d) {
  InferWeights w;
  w.dtype = d;
  std::vector<Slot> slots = plan(w, cfg);
  std::set<std::string> expected;
  std::vector<float> buf;
  for (const Slot& s : slots) {
    expected.insert(s.name);
    if (!src.contains(s.name)) {
      if (s.optional) continue;
      throw Error(src.source() + ": missing tensor '" + s.name + "'");
    }
    const io::WeightInfo info = src.info(s.name);
    if (info.shape != s.shape)
      throw Error(src.source() + ": tensor '" + s.name + "' has shape " + shape_str(info.shape) + ", expected " +
                  shape_str(s.shape));
    if (s.dense) {
      src.read_f32(s.name, s.dense->ptr());
    } else {
      buf.resize(Tensor::numel_of(s.shape));
      src.read_f32(s.name, buf.data());
      *s.matrix = WeightMatrix::from_f32(buf.data(), s.shape[0], s.shape[1], d);
    }
  }
  for (const std::string& n : src.names())
    if (!expected.count(n)) throw Error(src.source() + ": unexpected tensor '" + n + "' for this config");
  return w;
}

size_t InferWeights::bytes() const {
  size_t n = (embed.numel() + final_norm.numel()) * 4 + lm_head.bytes();
  for (const Layer& l : layers) {
    n += (l.attn_norm.numel() + l.mlp_norm.numel()) * 4;
    n += l.wq.bytes() + l.wk.bytes() + l.wv.bytes() + l.wo.bytes();
    const MoeParams& p = l.moe_small;
    for (const Tensor* t : {&p.wg, &p.wg0, &p.wg2, &p.gate_map}) n += t->numel() * 4;
    for (const auto* v : {&p.const_wg, &p.const_v})
      for (const Tensor& t : *v) n += t.numel() * 4;
    for (const WeightMatrix& m : l.up) n += m.bytes();
    for (const WeightMatrix& m : l.down) n += m.bytes();
  }
  return n;
}

}  // namespace moepp
