// MoeParams allocation, naming (checkpoint names) and initialisation.
#include "moe/moe_params.h"

#include <random>

namespace moepp {

MoeParams MoeParams::zeros(const MoeConfig& c) {
  MoeParams p;
  const int64_t E = c.n_experts, D = c.hidden, I = c.intermediate;
  if (c.two_layer_gate) {
    p.wg0 = Tensor({c.gate_hidden(), D});
    p.wg2 = Tensor({E, c.gate_hidden()});
  } else {
    p.wg = Tensor({E, D});
  }
  if (c.gating_residual) p.gate_map = Tensor({E, E});
  for (int64_t e = 0; e < c.n_ffn(); ++e) {
    p.up.emplace_back(std::vector<int64_t>{2 * I, D});
    p.down.emplace_back(std::vector<int64_t>{D, I});
  }
  for (int64_t e = 0; e < c.n_constant; ++e) {
    p.const_wg.emplace_back(std::vector<int64_t>{2, D});
    p.const_v.emplace_back(std::vector<int64_t>{D});
  }
  return p;
}

std::vector<std::pair<std::string, Tensor*>> MoeParams::named(const MoeConfig& c) {
  std::vector<std::pair<std::string, Tensor*>> r;
  if (!wg.empty()) r.emplace_back("gate.wg.weight", &wg);
  if (!wg0.empty()) r.emplace_back("gate.wg.0.weight", &wg0);
  if (!wg2.empty()) r.emplace_back("gate.wg.2.weight", &wg2);
  if (!gate_map.empty()) r.emplace_back("gate.gate_map.weight", &gate_map);
  const std::string ex = "experts.experts.";
  for (size_t e = 0; e < up.size(); ++e) {
    r.emplace_back(ex + std::to_string(e) + ".up_proj.weight", &up[e]);
    r.emplace_back(ex + std::to_string(e) + ".down_proj.weight", &down[e]);
  }
  for (size_t k = 0; k < const_wg.size(); ++k) {
    const std::string base = ex + std::to_string(c.first_constant() + static_cast<int64_t>(k));
    r.emplace_back(base + ".wg.weight", &const_wg[k]);
    r.emplace_back(base + ".constant", &const_v[k]);
  }
  return r;
}

std::vector<std::pair<std::string, const Tensor*>> MoeParams::named(const MoeConfig& c) const {
  std::vector<std::pair<std::string, const Tensor*>> r;
  for (auto& [n, t] : const_cast<MoeParams*>(this)->named(c)) r.emplace_back(n, t);
  return r;
}

void MoeParams::zero() {
  for (Tensor* t : {&wg, &wg0, &wg2, &gate_map}) t->zero();
  for (auto* v : {&up, &down, &const_wg, &const_v})
    for (Tensor& t : *v) t.zero();
}

void MoeParams::init_random(const MoeConfig& c, uint64_t seed, float std) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> n01(0.0f, 1.0f);
  for (auto& [name, t] : named(c)) {
    const bool is_v = name.size() >= 9 && name.compare(name.size() - 9, 9, ".constant") == 0;
    const float s = is_v ? 1.0f : std;
    for (float& x : t->data) x = s * n01(rng);
  }
}

}  // namespace moepp
