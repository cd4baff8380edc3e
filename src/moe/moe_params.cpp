// MoeParams allocation, naming (checkpoint names) and initialisation.
#include "moe/moe_params.h"

#include <random>

#include "core/error.h"

namespace moepp {

std::vector<MoeParamSpec> moe_param_specs(const MoeConfig& c) {
  const int64_t E = c.n_experts, D = c.hidden, I = c.intermediate;
  std::vector<MoeParamSpec> s;
  if (c.two_layer_gate) {
    s.push_back({"gate.wg.0.weight", {c.gate_hidden(), D}, MoeParamKind::kWg0});
    s.push_back({"gate.wg.2.weight", {E, c.gate_hidden()}, MoeParamKind::kWg2});
  } else {
    s.push_back({"gate.wg.weight", {E, D}, MoeParamKind::kWg});
  }
  if (c.gating_residual) s.push_back({"gate.gate_map.weight", {E, E}, MoeParamKind::kGateMap});
  const std::string ex = "experts.experts.";
  for (int64_t e = 0; e < c.n_ffn(); ++e) {
    s.push_back({ex + std::to_string(e) + ".up_proj.weight", {2 * I, D}, MoeParamKind::kUp, e});
    s.push_back({ex + std::to_string(e) + ".down_proj.weight", {D, I}, MoeParamKind::kDown, e});
  }
  for (int64_t k = 0; k < c.n_constant; ++k) {
    const std::string base = ex + std::to_string(c.first_constant() + k);
    s.push_back({base + ".wg.weight", {2, D}, MoeParamKind::kConstWg, k});
    s.push_back({base + ".constant", {D}, MoeParamKind::kConstV, k});
  }
  return s;
}

Tensor* MoeParams::slot(MoeParamKind kind, int64_t index) {
  auto at = [index](std::vector<Tensor>& v) -> Tensor* {
    return index >= 0 && index < static_cast<int64_t>(v.size()) ? &v[index] : nullptr;
  };
  switch (kind) {
    case MoeParamKind::kWg: return &wg;
    case MoeParamKind::kWg0: return &wg0;
    case MoeParamKind::kWg2: return &wg2;
    case MoeParamKind::kGateMap: return &gate_map;
    case MoeParamKind::kUp: return at(up);
    case MoeParamKind::kDown: return at(down);
    case MoeParamKind::kConstWg: return at(const_wg);
    case MoeParamKind::kConstV: return at(const_v);
  }
  return nullptr;
}

const Tensor* MoeParams::slot(MoeParamKind kind, int64_t index) const {
  return const_cast<MoeParams*>(this)->slot(kind, index);
}

MoeParams MoeParams::zeros(const MoeConfig& c) {
  MoeParams p;
  p.up.resize(c.n_ffn());
  p.down.resize(c.n_ffn());
  p.const_wg.resize(c.n_constant);
  p.const_v.resize(c.n_constant);
  for (const MoeParamSpec& s : moe_param_specs(c)) *p.slot(s.kind, s.index) = Tensor(s.shape);
  return p;
}

std::vector<std::pair<std::string, Tensor*>> MoeParams::named(const MoeConfig& c) {
  std::vector<std::pair<std::string, Tensor*>> r;
  for (const MoeParamSpec& s : moe_param_specs(c)) {
    Tensor* t = slot(s.kind, s.index);
    if (t == nullptr) throw Error("MoeParams: no tensor for '" + s.name + "' (not shaped for this config)");
    r.emplace_back(s.name, t);
  }
  return r;
}

std::vector<std::pair<std::string, const Tensor*>> MoeParams::named(const MoeConfig& c) const {
  std::vector<std::pair<std::string, const Tensor*>> r;
  for (auto& [n, t] : const_cast<MoeParams*>(this)->named(c)) r.emplace_back(n, t);
  return r;
}

size_t MoeParams::tensor_count() const {
  size_t n = 0;
  for (const Tensor* t : {&wg, &wg0, &wg2, &gate_map}) n += !t->empty();
  for (const auto* v : {&up, &down, &const_wg, &const_v})
    for (const Tensor& t : *v) n += !t.empty();
  return n;
}

void MoeParams::zero() {
  for (Tensor* t : {&wg, &wg0, &wg2, &gate_map}) t->zero();
  for (auto* v : {&up, &down, &const_wg, &const_v})
    for (Tensor& t : *v) t.zero();
}

void MoeParams::init_random(const MoeConfig& c, uint64_t seed, float std) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> n01(0.0f, 1.0f);
  for (const MoeParamSpec& spec : moe_param_specs(c)) {
    const float s = spec.kind == MoeParamKind::kConstV ? 1.0f : std;
    for (float& x : slot(spec.kind, spec.index)->data) x = s * n01(rng);
  }
}

}  // namespace moepp
