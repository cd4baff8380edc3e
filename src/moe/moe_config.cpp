// Parsing and validation of MoeConfig from Hugging Face style JSON (keys in docs/layer.md).
#include "moe/moe_config.h"

#include <nlohmann/json.hpp>
#include <set>
#include <utility>

#include "core/error.h"
#include "io/json_fields.h"

namespace moepp {
namespace {

using nlohmann::json;
using io::field_where;
using io::get_bool;
using io::get_int;
using io::get_number;
using io::has_field;

const std::set<std::string>& known_moe_keys() {
  static const std::set<std::string> keys = {
      "moe_top_k",          "moe_router",           "moe_2layer_gate",        "moe_use_logits_norm",
      "moe_gate_norm_std",  "moe_use_mixtral_gating", "moe_feature_no_mul_topk", "moe_gating_residual",
      "moe_tau",            "moe_aux_loss_coef",    "moe_capacity_factor",    "moe_relu_l1_coef",
      "moe_relu_target_experts", "moe_expert_interval"};
  return keys;
}

}  // namespace

const char* router_name(RouterKind r) {
  switch (r) {
    case RouterKind::kMoepp: return "moepp";
    case RouterKind::kTopK: return "topk";
    case RouterKind::kAdaMoe: return "adamoe";
    case RouterKind::kRelu: return "relu";
  }
  return "?";
}

MoeConfig MoeConfig::from_json(const json& j, const std::string& source) {
  if (!j.is_object()) throw Error(source + ": the config must be a JSON object");
  for (auto it = j.begin(); it != j.end(); ++it) {
    if (it.key().rfind("moe_", 0) == 0 && !known_moe_keys().count(it.key()))
      throw Error(field_where(source, it.key()) + " is not a known moe_* setting (see docs/layer.md)");
  }
  MoeConfig c;
  c.hidden = io::require_int(j, "hidden_size", source);
  c.intermediate = io::require_int(j, "intermediate_size", source);
  if (!has_field(j, "num_experts")) throw Error(field_where(source, "num_experts") + " is required");
  const json& ne = j["num_experts"];
  if (ne.is_number_integer()) {
    c.n_experts = ne.get<int64_t>();
  } else if (ne.is_array() && ne.size() == 1 && ne[0].is_number_integer()) {
    c.n_experts = ne[0].get<int64_t>();
  } else {
    throw Error(field_where(source, "num_experts") + " must be an integer or a list of one integer, got " + ne.dump());
  }

  if (has_field(j, "moe_router")) {
    const std::string s = io::get_string(j, "moe_router", source, "");
    if (s == "moepp") c.router = RouterKind::kMoepp;
    else if (s == "topk") c.router = RouterKind::kTopK;
    else if (s == "adamoe") c.router = RouterKind::kAdaMoe;
    else if (s == "relu") c.router = RouterKind::kRelu;
    else throw Error(field_where(source, "moe_router") + " must be one of moepp, topk, adamoe, relu; got '" + s + "'");
  }
  const bool is_moepp = c.router == RouterKind::kMoepp;
  c.n_zero = get_int(j, "n_zero_experts", source, is_moepp ? 1 : 0);
  c.n_copy = get_int(j, "n_copy_experts", source, is_moepp ? 1 : 0);
  c.n_constant = get_int(j, "n_constant_experts", source, is_moepp ? 2 : 0);
  c.top_k = get_int(j, "moe_top_k", source, c.top_k);
  // Released-config keys: a missing key takes the released config class's default (the struct's).
  c.two_layer_gate = get_bool(j, "moe_2layer_gate", source, c.two_layer_gate);
  c.logits_norm = get_bool(j, "moe_use_logits_norm", source, c.logits_norm);
  c.gate_norm_std = static_cast<float>(get_number(j, "moe_gate_norm_std", source, c.gate_norm_std));
  c.mixtral_gating = get_bool(j, "moe_use_mixtral_gating", source, c.mixtral_gating);
  c.no_mul_topk = get_bool(j, "moe_feature_no_mul_topk", source, c.no_mul_topk);
  // moepp's extension keys keep moepp's documented defaults.
  c.gating_residual = get_bool(j, "moe_gating_residual", source, is_moepp);
  c.tau = get_number(j, "moe_tau", source, c.tau);
  c.aux_loss_coef = static_cast<float>(get_number(j, "moe_aux_loss_coef", source, c.aux_loss_coef));
  // Absent or null (the same, as for every key) is dropless.
  if (has_field(j, "moe_capacity_factor")) c.capacity_factor = get_number(j, "moe_capacity_factor", source, 0.0);
  c.relu_l1_coef = static_cast<float>(get_number(j, "moe_relu_l1_coef", source, c.relu_l1_coef));
  if (has_field(j, "moe_relu_target_experts"))
    c.relu_target_experts = get_number(j, "moe_relu_target_experts", source, 0.0);
  c.layer_index = get_int(j, "layer_index", source, 0);
  c.training = get_bool(j, "training", source, false);
  if (get_int(j, "moe_expert_interval", source, 1) != 1)
    throw Error(field_where(source, "moe_expert_interval") + " must be 1 (an MoE++ layer in every block)");
  c.validate(source);
  return c;
}

void MoeConfig::validate(const std::string& source) const {
  auto bad = [&](const std::string& key, const std::string& msg) { throw Error(field_where(source, key) + " " + msg); };
  auto in_range = [&](const char* key, int64_t v, int64_t hi) {
    if (v <= 0 || v > hi) bad(key, "must be in [1, " + std::to_string(hi) + "], got " + std::to_string(v));
  };
  in_range("hidden_size", hidden, kMaxHidden);
  in_range("intermediate_size", intermediate, kMaxIntermediate);
  in_range("num_experts", n_experts, kMaxExperts);
  for (auto [key, v] :
       {std::pair{"n_zero_experts", n_zero}, {"n_copy_experts", n_copy}, {"n_constant_experts", n_constant}}) {
    if (v < 0) bad(key, "must be >= 0");
    if (v > kMaxExperts) bad(key, "must be <= " + std::to_string(kMaxExperts) + ", got " + std::to_string(v));
  }
  if (n_ffn() < 1) {
    // Built with += : GCC 12 reports a false -Wrestrict for "(" + std::to_string(...) here.
    std::string msg = "(";
    msg += std::to_string(n_experts);
    msg += ") leaves no FFN expert after ";
    msg += std::to_string(n_zc());
    msg += " zero-computation experts";
    bad("num_experts", msg);
  }
  // The FFN experts' weights (up [2I, D] and down [D, I] each); the caps above keep this from overflowing.
  if (const int64_t w = 3 * hidden * intermediate * n_ffn(); w > kMaxLayerExpertParams)
    bad("intermediate_size", "x hidden_size x FFN experts gives " + std::to_string(w) +
                                 " expert weights per layer, above the limit " + std::to_string(kMaxLayerExpertParams) +
                                 " (docs/limits.md)");
  if (top_k < 1 || top_k > n_experts)
    bad("moe_top_k", "must be in [1, num_experts = " + std::to_string(n_experts) + "], got " + std::to_string(top_k));
  if ((router == RouterKind::kTopK || router == RouterKind::kRelu) && n_zc() != 0)
    bad("moe_router", std::string("'") + router_name(router) +
                          "' takes no zero-computation experts: set n_zero_experts, n_copy_experts and "
                          "n_constant_experts to 0");
  if (router == RouterKind::kAdaMoe && (n_copy != 0 || n_constant != 0))
    bad("moe_router", "'adamoe' takes null (zero) experts only: set n_copy_experts and n_constant_experts to 0");
  if (mixtral_gating && (router == RouterKind::kAdaMoe))
    bad("moe_use_mixtral_gating", "applies to the moepp and topk routers only");
  if (logits_norm && router != RouterKind::kRelu && n_experts < 2)
    bad("moe_use_logits_norm", "needs num_experts >= 2 (the std of one logit is undefined)");
  if (!(gate_norm_std > 0.0f)) bad("moe_gate_norm_std", "must be > 0");
  if (!(tau > 0.0 && tau <= 1.0)) bad("moe_tau", "must be in (0, 1]");
  if (!(aux_loss_coef >= 0.0f)) bad("moe_aux_loss_coef", "must be >= 0");
  if (!(relu_l1_coef >= 0.0f)) bad("moe_relu_l1_coef", "must be >= 0");
  if (capacity_factor) {
    if (!(*capacity_factor > 0.0)) bad("moe_capacity_factor", "must be > 0 or null");
    if (router == RouterKind::kRelu) bad("moe_capacity_factor", "is not supported with the relu router");
  }
  if (relu_target_experts) {
    if (router != RouterKind::kRelu) bad("moe_relu_target_experts", "applies to the relu router only");
    if (!(*relu_target_experts > 0.0 && *relu_target_experts < static_cast<double>(n_experts)))
      bad("moe_relu_target_experts", "must be in (0, num_experts = " + std::to_string(n_experts) + "), got " +
                                         std::to_string(*relu_target_experts));
  }
  if (layer_index < 0) bad("layer_index", "must be >= 0");
}

}  // namespace moepp
