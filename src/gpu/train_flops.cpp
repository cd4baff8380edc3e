// Model FLOPs of a training token (see train_flops.h).
#include "gpu/train_flops.h"

#include <string>

#include "core/error.h"
#include "moe/ffn_experts.h"

namespace moepp::gpu {

TrainFlops train_flops_per_token(const ModelConfig& mc, int64_t T, const std::vector<float>& ffn_per_token) {
  check(static_cast<int64_t>(ffn_per_token.size()) == mc.n_layers,
        "train_flops_per_token: " + std::to_string(ffn_per_token.size()) + " FFN slot counts for " +
            std::to_string(mc.n_layers) + " layers");
  const double D = static_cast<double>(mc.hidden), V = static_cast<double>(mc.vocab);
  const double Q = static_cast<double>(mc.n_heads * mc.head_dim), KV = static_cast<double>(mc.n_kv_heads * mc.head_dim);
  TrainFlops f;
  for (int64_t l = 0; l < mc.n_layers; ++l) {
    const MoeConfig c = mc.layer_moe(static_cast<int>(l), true);
    const double E = static_cast<double>(c.n_experts);
    f.dense += 2.0 * D * (Q + 2.0 * KV) + 2.0 * Q * D;
    f.dense += c.two_layer_gate ? 2.0 * (D * 8.0 * E + 8.0 * E * E) : 2.0 * D * E;
    if (c.uses_residual()) f.dense += 2.0 * E * E;
    f.attention += 2.0 * 2.0 * Q * static_cast<double>(T + 1) / 2.0;
    f.experts += ffn_forward_flops(1, c) * static_cast<double>(ffn_per_token[l]);
  }
  f.dense += 2.0 * D * V;
  f.dense *= 3.0, f.attention *= 3.0, f.experts *= 3.0;
  return f;
}

}  // namespace moepp::gpu
