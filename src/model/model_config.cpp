// ModelConfig <-> config.json (Hugging Face keys of spec §5; the MoE++ keys are MoeConfig's).
#include "model/model_config.h"

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "io/json_fields.h"

namespace moepp {
namespace {

using nlohmann::json;
using io::field_where;
using io::get_int;
using io::get_number;
using io::get_token_id;
using io::has_field;
using io::require_int;

// The shortest decimal that reads back as the same float (1e-06, not 9.999999974752427e-07).
double short_decimal(float f) {
  char buf[32];
  for (int prec = 6; prec <= 9; ++prec) {
    std::snprintf(buf, sizeof buf, "%.*g", prec, static_cast<double>(f));
    if (std::strtof(buf, nullptr) == f) return std::strtod(buf, nullptr);
  }
  return static_cast<double>(f);
}

}  // namespace

void ModelConfig::set_zc_bias(float b) {
  check(std::isfinite(b) && std::fabs(b) <= 100.0f, "--zc-bias must be finite and within [-100, 100], got " +
                                                        std::to_string(b));
  check(b == 0.0f || (moe.n_ffn() < moe.n_experts && moe.router != RouterKind::kRelu),
        "--zc-bias: this model has no zero-computation experts to shift slots to (or uses the relu router)");
  moe.zc_bias = b;
}

MoeConfig ModelConfig::layer_moe(int i, bool training) const {
  MoeConfig c = moe;
  c.layer_index = i;
  c.training = training;
  return c;
}

ModelConfig ModelConfig::from_json(const json& j, const std::string& source) {
  if (!j.is_object()) throw Error(source + ": the config must be a JSON object");
  ModelConfig c;
  c.vocab = require_int(j, "vocab_size", source);
  c.hidden = require_int(j, "hidden_size", source);
  c.n_layers = require_int(j, "num_hidden_layers", source);
  c.n_heads = require_int(j, "num_attention_heads", source);
  c.n_kv_heads = get_int(j, "num_key_value_heads", source, c.n_heads);
  c.max_pos = get_int(j, "max_position_embeddings", source, 2048);
  c.rms_eps = static_cast<float>(get_number(j, "rms_norm_eps", source, 1e-6));
  c.rope_theta = static_cast<float>(get_number(j, "rope_theta", source, 1e4));
  c.bos = get_token_id(j, "bos_token_id", source, 1);
  c.eos = get_token_id(j, "eos_token_id", source, 2);
  c.pad = get_token_id(j, "pad_token_id", source, 0);

  // Keys checked only for values moepp does not support (absent or null: the supported default).
  if (io::get_bool(j, "tie_word_embeddings", source, false))
    throw Error(field_where(source, "tie_word_embeddings") +
                " is true: tied embeddings are not supported (MoE++ has a separate lm_head)");
  if (has_field(j, "hidden_act")) {
    const json& v = j["hidden_act"];
    if (!v.is_string() || v.get<std::string>() != "silu")
      throw Error(field_where(source, "hidden_act") + " must be \"silu\" (SwiGLU experts), got " + v.dump());
  }
  (void)io::get_string(j, "model_type", source, "");  // any string, not read
  if (has_field(j, "architectures")) {
    const json& a = j["architectures"];
    bool ok = a.is_array();
    if (ok)
      for (const json& s : a) ok = ok && s.is_string();
    if (!ok) throw Error(field_where(source, "architectures") + " must be a list of strings, got " + a.dump());
  }
  if (has_field(j, "rope_scaling"))
    throw Error(field_where(source, "rope_scaling") +
                " is not supported (plain RoPE only); remove it or set it to null");
  for (const char* key : {"attention_bias", "mlp_bias"})
    if (has_field(j, key) && !(j[key].is_boolean() && !j[key].get<bool>()))
      throw Error(field_where(source, key) + " must be false (the model has no biases), got " + j[key].dump());

  c.moe = MoeConfig::from_json(j, source);
  c.moe.layer_index = 0;
  c.moe.training = false;

  c.head_dim = c.n_heads > 0 ? c.hidden / c.n_heads : 0;
  c.validate(source);
  const int64_t hd = get_int(j, "head_dim", source, c.head_dim);
  if (hd != c.head_dim)
    throw Error(field_where(source, "head_dim") + " is " + std::to_string(hd) +
                ", but hidden_size / num_attention_heads = " + std::to_string(c.head_dim) +
                " (other head sizes are not supported)");
  return c;
}

void ModelConfig::validate(const std::string& source) const {
  auto bad = [&](const std::string& key, const std::string& msg) { throw Error(field_where(source, key) + " " + msg); };
  if (vocab <= 0 || vocab > INT32_MAX) bad("vocab_size", "must be in [1, 2^31 - 1], got " + std::to_string(vocab));
  if (hidden <= 0) bad("hidden_size", "must be > 0");
  if (n_layers <= 0) bad("num_hidden_layers", "must be > 0");
  if (n_layers > kMaxLayers)
    bad("num_hidden_layers", "must be <= " + std::to_string(kMaxLayers) + ", got " + std::to_string(n_layers));
  if (n_heads <= 0) bad("num_attention_heads", "must be > 0");
  if (hidden % n_heads != 0)
    bad("num_attention_heads", "= " + std::to_string(n_heads) + " must divide hidden_size = " + std::to_string(hidden));
  if (n_kv_heads <= 0 || n_heads % n_kv_heads != 0)
    bad("num_key_value_heads", "= " + std::to_string(n_kv_heads) + " must be > 0 and divide num_attention_heads = " +
                                   std::to_string(n_heads));
  if (head_dim != hidden / n_heads)
    bad("head_dim", "is " + std::to_string(head_dim) + ", but hidden_size / num_attention_heads = " +
                        std::to_string(hidden / n_heads));
  if (head_dim % 2 != 0)
    bad("num_attention_heads", "gives head_dim = " + std::to_string(head_dim) + ", which must be even for RoPE");
  if (max_pos <= 0) bad("max_position_embeddings", "must be > 0");
  if (max_pos > kMaxPositions)
    bad("max_position_embeddings",
        "must be <= " + std::to_string(kMaxPositions) + ", got " + std::to_string(max_pos) + " (docs/limits.md)");
  if (!(rms_eps > 0.0f)) bad("rms_norm_eps", "must be > 0");
  if (!(rope_theta > 0.0f)) bad("rope_theta", "must be > 0");
  if (moe.hidden != hidden) bad("hidden_size", "differs between the model and its MoE++ layer config");
  if (bos >= vocab) bad("bos_token_id", "must be < vocab_size");
  if (eos >= vocab) bad("eos_token_id", "must be < vocab_size");
  if (pad >= vocab) bad("pad_token_id", "must be < vocab_size");
  moe.validate(source);
  if (const int64_t w = weight_bound(); w > kMaxModelWeights)
    bad("hidden_size", "with these dimensions gives a model of about " + std::to_string(w) +
                           " weights, above the limit " + std::to_string(kMaxModelWeights) + " (docs/limits.md)");
}

int64_t ModelConfig::weight_bound() const {
  const int64_t per_layer = 4 * hidden * hidden + 3 * hidden * moe.intermediate * moe.n_ffn() + moe.n_experts * hidden;
  return 2 * vocab * hidden + n_layers * per_layer;
}

json ModelConfig::to_json() const {
  json j;
  j["architectures"] = json::array({"MoeForCausalLM"});
  j["model_type"] = "MoE++";
  j["torch_dtype"] = "float32";
  j["vocab_size"] = vocab;
  j["hidden_size"] = hidden;
  j["intermediate_size"] = moe.intermediate;
  j["num_hidden_layers"] = n_layers;
  j["num_attention_heads"] = n_heads;
  j["num_key_value_heads"] = n_kv_heads;
  j["head_dim"] = head_dim;
  j["max_position_embeddings"] = max_pos;
  j["rms_norm_eps"] = short_decimal(rms_eps);
  j["rope_theta"] = short_decimal(rope_theta);
  j["hidden_act"] = "silu";
  j["tie_word_embeddings"] = false;
  j["bos_token_id"] = bos;
  j["eos_token_id"] = eos;
  j["pad_token_id"] = pad;
  // MoE++ layer (released-config keys, then the extension keys of docs/layer.md).
  j["num_experts"] = json::array({moe.n_experts});
  j["moe_expert_interval"] = 1;
  j["moe_2layer_gate"] = moe.two_layer_gate;
  j["moe_use_logits_norm"] = moe.logits_norm;
  j["moe_gate_norm_std"] = short_decimal(moe.gate_norm_std);
  j["moe_use_mixtral_gating"] = moe.mixtral_gating;
  j["moe_feature_no_mul_topk"] = moe.no_mul_topk;
  j["n_zero_experts"] = moe.n_zero;
  j["n_copy_experts"] = moe.n_copy;
  j["n_constant_experts"] = moe.n_constant;
  j["moe_top_k"] = moe.top_k;
  j["moe_router"] = router_name(moe.router);
  j["moe_gating_residual"] = moe.gating_residual;
  j["moe_tau"] = moe.tau;
  j["moe_aux_loss_coef"] = short_decimal(moe.aux_loss_coef);
  j["moe_capacity_factor"] = moe.capacity_factor ? json(*moe.capacity_factor) : json(nullptr);
  j["moe_relu_l1_coef"] = short_decimal(moe.relu_l1_coef);
  if (moe.relu_target_experts) j["moe_relu_target_experts"] = *moe.relu_target_experts;
  return j;
}

std::vector<std::string> ModelConfig::differences(const ModelConfig& other) const {
  const json a = to_json(), b = other.to_json();
  std::vector<std::string> out;
  for (auto it = a.begin(); it != a.end(); ++it) {
    const json& bv = b.contains(it.key()) ? b[it.key()] : json();
    if (it.value() != bv) out.push_back(it.key() + " (" + it.value().dump() + " vs " + bv.dump() + ")");
  }
  return out;
}

}  // namespace moepp
