// Training-mode auxiliary losses of the router: the heterogeneous load-balance loss of MoE++
// (eta = 1 for FFN experts, tau for zero-computation experts), its all-ones form for vanilla top-k,
// AdaMoE's Switch-style loss with averaged null-expert loads, and ReMoE's L1 penalty on ReLU gates.
// Definitions in docs/layer.md ("Training mode"). Kernel convention: outputs first, then inputs, then
// settings and sizes.
#pragma once

#include <cstdint>

#include "moe/moe_config.h"

namespace moepp {

// The statistics of T tokens that the losses need, additive over disjoint sets of tokens (sum them
// over the ranks of a data-parallel job to get the global batch's): stats [balance_statistics_size(cfg)]
// = per-expert selection counts [E], per-expert sums of p (or, for relu, of R_te > 0) [E], the count of
// R_te == 0 (relu), and T. ids [T, W]; p [T, E] (not relu; read in training mode only); z [T, E] (relu).
void balance_statistics(double* stats, const int32_t* ids, const float* p, const float* z, const MoeConfig& cfg,
                        int64_t T);
inline int64_t balance_statistics_size(const MoeConfig& cfg) { return 2 * cfg.n_experts + 2; }

// From the statistics: select_frac [E] (f_i, fraction of tokens selecting expert i), aux_dp [E] (d aux_loss
// / d p_te, the same for every token; 0 outside training or for relu), relu_count [E] (tokens with
// R_te > 0; relu router, else 0), *relu_sparsity (fraction of R_te == 0; relu router, else 0), *aux_loss
// (0 outside training mode).
void balance_loss_from_statistics(float* aux_loss, float* relu_sparsity, float* select_frac, float* aux_dp,
                                  float* relu_count, const double* stats, const MoeConfig& cfg);

// ReMoE's adaptive L1 coefficient: lambda * 1.2 when sparsity is below cfg.relu_target_sparsity()
// (1 - K/E unless moe_relu_target_experts sets the target), else lambda / 1.2.
float relu_l1_coef_update(float lambda, float sparsity, const MoeConfig& cfg);

}  // namespace moepp
