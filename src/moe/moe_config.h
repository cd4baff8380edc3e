// MoeConfig: every setting of one MoE++ layer (expert counts and layout, router variant and options,
// training-mode losses and capacity), parsed and validated from a Hugging Face style config.json.
// The exact meaning of every key is in docs/layer.md.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include <nlohmann/json_fwd.hpp>

namespace moepp {

// Sanity limits on a layer's dimensions (docs/limits.md): far above the released 7B model (D 1536,
// I 4096, 20 experts), low enough that no product of them overflows and that a config with absurd
// dimensions is rejected before anything is allocated.
inline constexpr int64_t kMaxHidden = 65536;                      // hidden_size
inline constexpr int64_t kMaxIntermediate = 262144;               // intermediate_size
inline constexpr int64_t kMaxExperts = 1024;                      // num_experts
inline constexpr int64_t kMaxLayerExpertParams = int64_t{1} << 32;  // 3 * D * I * FFN experts

enum class RouterKind { kMoepp, kTopK, kAdaMoe, kRelu };
enum class ExpertKind { kFfn, kConstant, kCopy, kZero };

const char* router_name(RouterKind r);

struct MoeConfig {
  int64_t hidden = 0;        // D
  int64_t intermediate = 0;  // I, per FFN expert
  int64_t n_experts = 0;     // E: FFN + zero-computation
  int64_t n_zero = 0, n_copy = 0, n_constant = 0;
  int64_t top_k = 2;  // K
  RouterKind router = RouterKind::kMoepp;
  // The five router keys of the released config class (configuration_moe_plus_plus.py), with its
  // defaults: a config.json that leaves one out means the released default (docs/layer.md).
  bool two_layer_gate = true;
  bool logits_norm = false;
  float gate_norm_std = 1.0f;
  bool mixtral_gating = false;
  bool no_mul_topk = false;
  bool gating_residual = true;
  double tau = 0.75;
  float aux_loss_coef = 0.01f;
  std::optional<double> capacity_factor;  // nullopt: dropless
  float relu_l1_coef = 1e-8f;
  // ReMoE (relu router) only: the mean number of experts per token its adaptive L1 coefficient aims
  // at (moe_relu_target_experts; fractional allowed, in (0, E)); nullopt: K, ReMoE's rule.
  std::optional<double> relu_target_experts;
  int64_t layer_index = 0;
  bool training = false;
  // Inference only, not a config key: added to the (normalised) router scores of every
  // zero-computation expert before the softmax and the top-k (moepp and adamoe routers), so B > 0
  // sends more slots to them (less compute, some quality) and B < 0 fewer. The router logits passed on
  // as the next layer's gating residual are not changed. Set through set_zc_bias (model_config.h).
  float zc_bias = 0.0f;

  // Expert layout: [0, n_ffn) FFN, then constant, then copy, then zero (last).
  int64_t n_ffn() const { return n_experts - n_zero - n_copy - n_constant; }
  int64_t n_zc() const { return n_zero + n_copy + n_constant; }
  int64_t first_constant() const { return n_ffn(); }
  int64_t first_copy() const { return n_ffn() + n_constant; }
  int64_t first_zero() const { return n_experts - n_zero; }
  ExpertKind kind(int64_t e) const {
    if (e < first_constant()) return ExpertKind::kFfn;
    if (e < first_copy()) return ExpertKind::kConstant;
    if (e < first_zero()) return ExpertKind::kCopy;
    return ExpertKind::kZero;
  }
  bool uses_residual() const { return gating_residual && layer_index > 0; }
  // The released MOELayer.forward multiplies the experts' input by K only when neither
  // moe_use_mixtral_gating nor moe_feature_no_mul_topk is set.
  bool scales_input() const { return !(mixtral_gating || no_mul_topk); }
  float input_scale() const { return scales_input() ? static_cast<float>(top_k) : 1.0f; }
  bool uses_capacity() const { return training && capacity_factor.has_value(); }
  // Width of the per-token slot arrays: K, or E for the ReLU router (a variable number of experts).
  int64_t slot_width() const { return router == RouterKind::kRelu ? n_experts : top_k; }
  int64_t gate_hidden() const { return 8 * n_experts; }  // two-layer router's hidden width
  // The relu router's target sparsity (fraction of router outputs that are 0): 1 - target / E.
  double relu_target_sparsity() const {
    return 1.0 - relu_target_experts.value_or(static_cast<double>(top_k)) / static_cast<double>(n_experts);
  }

  // Throws moepp::Error naming `source` and the field when a value is missing, mistyped or invalid.
  static MoeConfig from_json(const nlohmann::json& j, const std::string& source);
  void validate(const std::string& source) const;
};

}  // namespace moepp
