// The layer benchmarks' shared setup (see layer_cases.h).
#include "layer_cases.h"

#include <algorithm>
#include <sstream>

#include "core/error.h"

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

float bisect_bias(const std::function<double(float)>& fraction_at, double target) {
  if (target >= 1.0) return -100.0f;
  float lo = -100.0f, hi = 100.0f;  // fraction(lo) ~ 1, fraction(hi) ~ 0
  for (int it = 0; it < 40; ++it) {
    const float mid = 0.5f * (lo + hi);
    if (fraction_at(mid) > target) lo = mid;
    else hi = mid;
  }
  return 0.5f * (lo + hi);
}

}  // namespace moepp
