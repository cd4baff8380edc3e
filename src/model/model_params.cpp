// ModelParams allocation, checkpoint naming and initialisation.
#include "model/model_params.h"

#include <random>

#include "core/error.h"

namespace moepp {

std::vector<ParamSpec> param_specs(const ModelConfig& c) {
  const int64_t V = c.vocab, D = c.hidden, Q = c.n_heads * c.head_dim, KV = c.n_kv_heads * c.head_dim;
  std::vector<ParamSpec> s;
  s.push_back({"model.embed_tokens.weight", {V, D}, ParamKind::kEmbed});
  for (int64_t i = 0; i < c.n_layers; ++i) {
    const std::string b = "model.layers." + std::to_string(i) + ".";
    s.push_back({b + "input_layernorm.weight", {D}, ParamKind::kAttnNorm, i});
    s.push_back({b + "self_attn.q_proj.weight", {Q, D}, ParamKind::kWq, i});
    s.push_back({b + "self_attn.k_proj.weight", {KV, D}, ParamKind::kWk, i});
    s.push_back({b + "self_attn.v_proj.weight", {KV, D}, ParamKind::kWv, i});
    s.push_back({b + "self_attn.o_proj.weight", {D, Q}, ParamKind::kWo, i});
    s.push_back({b + "post_attention_layernorm.weight", {D}, ParamKind::kMlpNorm, i});
    for (MoeParamSpec& m : moe_param_specs(c.layer_moe(static_cast<int>(i), false))) {
      const bool optional = i == 0 && m.kind == MoeParamKind::kGateMap;
      std::string name = b + "mlp.moe." + m.name;
      std::vector<int64_t> shape = m.shape;
      s.push_back({std::move(name), std::move(shape), ParamKind::kMoe, i, std::move(m), optional});
    }
  }
  s.push_back({"model.norm.weight", {D}, ParamKind::kFinalNorm});
  s.push_back({"lm_head.weight", {V, D}, ParamKind::kLmHead});
  return s;
}

Tensor* ModelParams::slot(const ParamSpec& s) {
  if (s.kind == ParamKind::kEmbed) return &embed;
  if (s.kind == ParamKind::kFinalNorm) return &final_norm;
  if (s.kind == ParamKind::kLmHead) return &lm_head;
  if (s.layer < 0 || s.layer >= static_cast<int64_t>(layers.size())) return nullptr;
  Layer& l = layers[s.layer];
  switch (s.kind) {
    case ParamKind::kAttnNorm: return &l.attn_norm;
    case ParamKind::kWq: return &l.wq;
    case ParamKind::kWk: return &l.wk;
    case ParamKind::kWv: return &l.wv;
    case ParamKind::kWo: return &l.wo;
    case ParamKind::kMlpNorm: return &l.mlp_norm;
    case ParamKind::kMoe: return l.moe.slot(s.moe.kind, s.moe.index);
    default: return nullptr;
  }
}

const Tensor* ModelParams::slot(const ParamSpec& s) const { return const_cast<ModelParams*>(this)->slot(s); }

ModelParams ModelParams::zeros(const ModelConfig& c) {
  ModelParams p;
  p.layers.resize(c.n_layers);
  for (int64_t i = 0; i < c.n_layers; ++i) p.layers[i].moe = MoeParams::zeros(c.layer_moe(static_cast<int>(i), false));
  for (const ParamSpec& s : param_specs(c))
    if (s.kind != ParamKind::kMoe) *p.slot(s) = Tensor(s.shape);
  return p;
}

std::vector<std::pair<std::string, Tensor*>> ModelParams::named(const ModelConfig& c) {
  std::vector<std::pair<std::string, Tensor*>> r;
  for (const ParamSpec& s : param_specs(c)) {
    Tensor* t = slot(s);
    if (t == nullptr) throw Error("ModelParams: no tensor for '" + s.name + "' (not shaped for this config)");
    r.emplace_back(s.name, t);
  }
  return r;
}

std::vector<std::pair<std::string, const Tensor*>> ModelParams::named(const ModelConfig& c) const {
  std::vector<std::pair<std::string, const Tensor*>> r;
  for (auto& [n, t] : const_cast<ModelParams*>(this)->named(c)) r.emplace_back(n, t);
  return r;
}

void ModelParams::init_random(const ModelConfig& c, uint64_t seed, float std) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> n01(0.0f, 1.0f);
  auto fill = [&](Tensor& t) {
    for (float& x : t.data) x = std * n01(rng);
  };
  fill(embed);
  for (size_t i = 0; i < layers.size(); ++i) {
    Layer& l = layers[i];
    std::fill(l.attn_norm.data.begin(), l.attn_norm.data.end(), 1.0f);
    std::fill(l.mlp_norm.data.begin(), l.mlp_norm.data.end(), 1.0f);
    for (Tensor* t : {&l.wq, &l.wk, &l.wv, &l.wo}) fill(*t);
    l.moe.init_random(c.layer_moe(static_cast<int>(i), false), rng(), std);
  }
  std::fill(final_norm.data.begin(), final_norm.data.end(), 1.0f);
  fill(lm_head);
}

void ModelParams::zero() {
  embed.zero();
  for (Layer& l : layers) {
    for (Tensor* t : {&l.attn_norm, &l.wq, &l.wk, &l.wv, &l.wo, &l.mlp_norm}) t->zero();
    l.moe.zero();
  }
  final_norm.zero();
  lm_head.zero();
}

size_t ModelParams::numel() const {
  size_t n = embed.numel() + final_norm.numel() + lm_head.numel();
  for (const Layer& l : layers) {
    for (const Tensor* t : {&l.attn_norm, &l.wq, &l.wk, &l.wv, &l.wo, &l.mlp_norm}) n += t->numel();
    for (const Tensor* t : {&l.moe.wg, &l.moe.wg0, &l.moe.wg2, &l.moe.gate_map}) n += t->numel();
    for (const auto* v : {&l.moe.up, &l.moe.down, &l.moe.const_wg, &l.moe.const_v})
      for (const Tensor& t : *v) n += t.numel();
  }
  return n;
}

}  // namespace moepp
