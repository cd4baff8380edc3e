// The layer benchmarks' shared setup (see layer_cases.h).
#include "layer_cases.h"

#include <algorithm>
#include <sstream>

#include "core/error.h"
#include "moe/moe_state.h"
#include "moe/router.h"

namespace moepp {
namespace {

std::vector<std::string> split_list(const std::string& s) {
  std::vector<std::string> r;
  std::stringstream ss(s);
  for (std::string item; std::getline(ss, item, ',');)
    if (!item.empty()) r.push_back(item);
  return r;
}

}  // namespace

const std::vector<ShapeCase>& all_shapes() {
  static const std::vector<ShapeCase> shapes = {
      {"768x2048-8+4", 768, 2048, 8, 1, 1, 2},
      {"768x2048-16+4", 768, 2048, 16, 1, 1, 2},
      {"768x2048-32+8", 768, 2048, 32, 1, 1, 6},
      {"1536x4096-16+4", 1536, 4096, 16, 1, 1, 2},
  };
  return shapes;
}


std::vector<ShapeCase> shapes_named(const std::string& list, const std::string& who) {
  if (list == "all") return all_shapes();
  std::vector<ShapeCase> shapes;
  for (const std::string& name : split_list(list)) {
    auto it = std::find_if(all_shapes().begin(), all_shapes().end(), [&](const ShapeCase& s) { return s.name == name; });
    check(it != all_shapes().end(), who + ": unknown case '" + name + "'");
    shapes.push_back(*it);
  }
  check(!shapes.empty(), who + ": no case named");
  return shapes;
}

std::vector<double> fractions_named(const std::string& list, const std::string& who) {
  std::vector<double> fractions;
  for (const std::string& f : split_list(list)) {
    double v = 0;
    try {
      v = std::stod(f);
    } catch (...) {
      throw Error(who + ": --fractions: '" + f + "' is not a number");
    }
    check(v > 0.0 && v <= 1.0, who + ": --fractions must be in (0, 1]");
    fractions.push_back(v);
  }
  check(!fractions.empty(), who + ": --fractions is empty");
  return fractions;
}

MoeConfig make_config(const ShapeCase& s, bool moepp) {
  MoeConfig c;
  c.hidden = s.d;
  c.intermediate = s.i;
  c.router = moepp ? RouterKind::kMoepp : RouterKind::kTopK;
  c.n_zero = moepp ? s.n_zero : 0;
  c.n_copy = moepp ? s.n_copy : 0;
  c.n_constant = moepp ? s.n_const : 0;
  c.n_experts = s.n_ffn + c.n_zc();
  c.gating_residual = false;  // layer 0
  // The released 7B checkpoint's router flags (spec §5), not the released config class's defaults.
  c.two_layer_gate = false;
  c.logits_norm = true;
  c.no_mul_topk = true;
  c.validate("bench");
  return c;
}

// Fraction of slots that reach FFN experts with bias b on the zero-computation experts.
double ffn_fraction(const MoeConfig& c, MoeParams& p, const Tensor& x, float b) {
  for (int64_t e = c.n_ffn(); e < c.n_experts; ++e) p.wg.data[e * c.hidden] = b;
  MoeForwardState st;
  st.resize(c, x.shape[0]);
  router_logits_forward(st.z.ptr(), nullptr, x.ptr(), nullptr, p, c, st.T);
  router_select_forward(st.ids.data(), st.w.data(), st.kept.data(), st.s.ptr(), st.p.ptr(), st.sigma.data(),
                        st.norm.data(), st.z.ptr(), c, st.T);
  int64_t ffn = 0;
  for (int32_t id : st.ids) ffn += id < c.n_ffn();
  return static_cast<double>(ffn) / static_cast<double>(st.ids.size());
}

float bias_for_fraction(const MoeConfig& c, MoeParams& p, const Tensor& x, double target) {
  if (target >= 1.0) return -100.0f;
  float lo = -100.0f, hi = 100.0f;  // fraction(lo) ~ 1, fraction(hi) ~ 0
  for (int it = 0; it < 40; ++it) {
    const float mid = 0.5f * (lo + hi);
    if (ffn_fraction(c, p, x, mid) > target) lo = mid;
    else hi = mid;
  }
  return 0.5f * (lo + hi);
}


}  // namespace moepp
