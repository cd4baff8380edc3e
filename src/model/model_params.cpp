// ModelParams allocation, checkpoint naming and initialisation.
#include "model/model_params.h"

#include <random>

namespace moepp {

ModelParams ModelParams::zeros(const ModelConfig& c) {
  ModelParams p;
  const int64_t V = c.vocab, D = c.hidden, Q = c.n_heads * c.head_dim, KV = c.n_kv_heads * c.head_dim;
  p.embed = Tensor({V, D});
  p.layers.resize(c.n_layers);
  for (int64_t i = 0; i < c.n_layers; ++i) {
    Layer& l = p.layers[i];
    l.attn_norm = Tensor({D});
    l.wq = Tensor({Q, D});
    l.wk = Tensor({KV, D});
    l.wv = Tensor({KV, D});
    l.wo = Tensor({D, Q});
    l.mlp_norm = Tensor({D});
    l.moe = MoeParams::zeros(c.layer_moe(static_cast<int>(i), false));
  }
  p.final_norm = Tensor({D});
  p.lm_head = Tensor({V, D});
  return p;
}

std::vector<std::pair<std::string, Tensor*>> ModelParams::named(const ModelConfig& c) {
  std::vector<std::pair<std::string, Tensor*>> r;
  r.emplace_back("model.embed_tokens.weight", &embed);
  for (size_t i = 0; i < layers.size(); ++i) {
    Layer& l = layers[i];
    const std::string b = "model.layers." + std::to_string(i) + ".";
    r.emplace_back(b + "input_layernorm.weight", &l.attn_norm);
    r.emplace_back(b + "self_attn.q_proj.weight", &l.wq);
    r.emplace_back(b + "self_attn.k_proj.weight", &l.wk);
    r.emplace_back(b + "self_attn.v_proj.weight", &l.wv);
    r.emplace_back(b + "self_attn.o_proj.weight", &l.wo);
    r.emplace_back(b + "post_attention_layernorm.weight", &l.mlp_norm);
    for (auto& [name, t] : l.moe.named(c.layer_moe(static_cast<int>(i), false)))
      r.emplace_back(b + "mlp.moe." + name, t);
  }
  r.emplace_back("model.norm.weight", &final_norm);
  r.emplace_back("lm_head.weight", &lm_head);
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
