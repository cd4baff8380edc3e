// Training-mode auxiliary losses of the router: the heterogeneous load-balance loss of MoE++
// (eta = 1 for FFN experts, tau for zero-computation experts), its all-ones form for vanilla top-k,
// AdaMoE's Switch-style loss with averaged null-expert loads, and ReMoE's L1 penalty on ReLU gates.
// Definitions in docs/layer.md ("Training mode").
#pragma once

#include "moe/moe_config.h"
#include "moe/moe_state.h"

namespace moepp {

// Inputs: st.ids, st.p (or st.z for relu). Outputs: st.select_frac, st.aux_dp (d loss / d p_te, the
// same for every token), st.relu_count, st.relu_sparsity, st.aux_loss.
void balance_loss_forward(MoeForwardState& st, const MoeConfig& cfg);

// ReMoE's adaptive L1 coefficient: lambda * 1.2 when sparsity is below 1 - K/E, else lambda / 1.2.
float relu_l1_coef_update(float lambda, float sparsity, const MoeConfig& cfg);

}  // namespace moepp
