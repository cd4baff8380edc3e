// Load-balance losses (forward value and the constant per-expert gradient with respect to p).
#include "moe/balance_loss.h"

#include <algorithm>
#include <vector>

namespace moepp {

void balance_loss_forward(float* aux_loss, float* relu_sparsity, float* select_frac, float* aux_dp, float* relu_count,
                          const int32_t* ids, const float* p, const float* z, const MoeConfig& cfg, int64_t T) {
  const int64_t E = cfg.n_experts, W = cfg.slot_width(), K = cfg.top_k;
  *aux_loss = 0.0f;
  *relu_sparsity = 0.0f;
  std::fill(select_frac, select_frac + E, 0.0f);
  std::fill(aux_dp, aux_dp + E, 0.0f);
  std::fill(relu_count, relu_count + E, 0.0f);
  if (T == 0) return;
  std::vector<double> count(E, 0.0);
  for (int64_t i = 0; i < T * W; ++i)
    if (ids[i] >= 0) count[ids[i]] += 1.0;

  if (cfg.router == RouterKind::kRelu) {
    // lambda * E / (K T^2) * sum_e (sum_t R_te) * (sum_t 1[R_te > 0])
    std::vector<double> rsum(E, 0.0);
    double zeros = 0.0;
    for (int64_t t = 0; t < T; ++t)
      for (int64_t e = 0; e < E; ++e) {
        const float r = z[t * E + e];
        if (r > 0.0f) rsum[e] += r;
        else zeros += 1.0;
      }
    double acc = 0.0;
    for (int64_t e = 0; e < E; ++e) {
      relu_count[e] = static_cast<float>(count[e]);
      select_frac[e] = static_cast<float>(count[e] / T);
      acc += rsum[e] * count[e];
    }
    *relu_sparsity = static_cast<float>(zeros / (static_cast<double>(T) * E));
    if (cfg.training)
      *aux_loss = static_cast<float>(cfg.relu_l1_coef * E / (static_cast<double>(K) * T * T) * acc);
    return;
  }

  for (int64_t e = 0; e < E; ++e) select_frac[e] = static_cast<float>(count[e] / T);
  if (!cfg.training) return;
  // P_e = mean_t p_te
  std::vector<double> P(E, 0.0);
  for (int64_t t = 0; t < T; ++t)
    for (int64_t e = 0; e < E; ++e) P[e] += p[t * E + e];
  for (double& v : P) v /= static_cast<double>(T);

  std::vector<double> coef(E);  // aux_loss = sum_e coef_e * P_e
  const double beta = cfg.aux_loss_coef;
  if (cfg.router == RouterKind::kAdaMoe) {
    double null_mean = 0.0;
    for (int64_t e = cfg.first_zero(); e < E; ++e) null_mean += count[e];
    if (cfg.n_zero > 0) null_mean /= static_cast<double>(cfg.n_zero);
    for (int64_t e = 0; e < E; ++e) {
      const double c = cfg.kind(e) == ExpertKind::kZero ? null_mean : count[e];
      coef[e] = beta * E * c / (static_cast<double>(T) * K);
    }
  } else {
    for (int64_t e = 0; e < E; ++e) {
      const double eta = (cfg.router == RouterKind::kMoepp && cfg.kind(e) != ExpertKind::kFfn) ? cfg.tau : 1.0;
      coef[e] = beta * eta * count[e] / static_cast<double>(T);
    }
  }
  double loss = 0.0;
  for (int64_t e = 0; e < E; ++e) {
    loss += coef[e] * P[e];
    aux_dp[e] = static_cast<float>(coef[e] / static_cast<double>(T));
  }
  *aux_loss = static_cast<float>(loss);
}

float relu_l1_coef_update(float lambda, float sparsity, const MoeConfig& cfg) {
  const float target = 1.0f - static_cast<float>(cfg.top_k) / static_cast<float>(cfg.n_experts);
  return sparsity < target ? lambda * 1.2f : lambda / 1.2f;
}

}  // namespace moepp
