// Load-balance losses: the per-expert statistics of T tokens, and the loss value with its constant
// per-expert gradient with respect to p computed from them (see balance_loss.h).
#include "moe/balance_loss.h"

#include <algorithm>
#include <vector>

namespace moepp {

void balance_statistics(double* stats, const int32_t* ids, const float* p, const float* z, const MoeConfig& cfg,
                        int64_t T) {
  const int64_t E = cfg.n_experts, W = cfg.slot_width();
  double* count = stats;
  double* sum = stats + E;
  std::fill(stats, stats + balance_statistics_size(cfg), 0.0);
  stats[2 * E + 1] = static_cast<double>(T);
  for (int64_t i = 0; i < T * W; ++i)
    if (ids[i] >= 0) count[ids[i]] += 1.0;
  if (cfg.router == RouterKind::kRelu) {
    double zeros = 0.0;
    for (int64_t t = 0; t < T; ++t)
      for (int64_t e = 0; e < E; ++e) {
        const float r = z[t * E + e];
        if (r > 0.0f) sum[e] += r;
        else zeros += 1.0;
      }
    stats[2 * E] = zeros;
    return;
  }
  if (!cfg.training) return;
  for (int64_t t = 0; t < T; ++t)
    for (int64_t e = 0; e < E; ++e) sum[e] += p[t * E + e];
}

void balance_loss_from_statistics(float* aux_loss, float* relu_sparsity, float* select_frac, float* aux_dp,
                                  float* relu_count, const double* stats, const MoeConfig& cfg) {
  const int64_t E = cfg.n_experts, K = cfg.top_k;
  const double* count = stats;
  const double* sum = stats + E;
  const double T = stats[2 * E + 1];
  *aux_loss = 0.0f;
  *relu_sparsity = 0.0f;
  std::fill(select_frac, select_frac + E, 0.0f);
  std::fill(aux_dp, aux_dp + E, 0.0f);
  std::fill(relu_count, relu_count + E, 0.0f);
  if (T == 0.0) return;

  if (cfg.router == RouterKind::kRelu) {
    // lambda * E / (K T^2) * sum_e (sum_t R_te) * (sum_t 1[R_te > 0])
    double acc = 0.0;
    for (int64_t e = 0; e < E; ++e) {
      relu_count[e] = static_cast<float>(count[e]);
      select_frac[e] = static_cast<float>(count[e] / T);
      acc += sum[e] * count[e];
    }
    *relu_sparsity = static_cast<float>(stats[2 * E] / (T * static_cast<double>(E)));
    if (cfg.training) *aux_loss = static_cast<float>(cfg.relu_l1_coef * E / (static_cast<double>(K) * T * T) * acc);
    return;
  }

  for (int64_t e = 0; e < E; ++e) select_frac[e] = static_cast<float>(count[e] / T);
  if (!cfg.training) return;
  // P_e = mean_t p_te
  std::vector<double> P(sum, sum + E);
  for (double& v : P) v /= T;

  std::vector<double> coef(E);  // aux_loss = sum_e coef_e * P_e
  const double beta = cfg.aux_loss_coef;
  if (cfg.router == RouterKind::kAdaMoe) {
    double null_mean = 0.0;
    for (int64_t e = cfg.first_zero(); e < E; ++e) null_mean += count[e];
    if (cfg.n_zero > 0) null_mean /= static_cast<double>(cfg.n_zero);
    for (int64_t e = 0; e < E; ++e) {
      const double c = cfg.kind(e) == ExpertKind::kZero ? null_mean : count[e];
      coef[e] = beta * E * c / (T * K);
    }
  } else {
    for (int64_t e = 0; e < E; ++e) {
      const double eta = (cfg.router == RouterKind::kMoepp && cfg.kind(e) != ExpertKind::kFfn) ? cfg.tau : 1.0;
      coef[e] = beta * eta * count[e] / T;
    }
  }
  double loss = 0.0;
  for (int64_t e = 0; e < E; ++e) {
    loss += coef[e] * P[e];
    aux_dp[e] = static_cast<float>(coef[e] / T);
  }
  *aux_loss = static_cast<float>(loss);
}

float relu_l1_coef_update(float lambda, float sparsity, const MoeConfig& cfg) {
  const float target = static_cast<float>(cfg.relu_target_sparsity());
  return sparsity < target ? lambda * 1.2f : lambda / 1.2f;
}

}  // namespace moepp
