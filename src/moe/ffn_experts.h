// The FFN (SwiGLU) experts, run grouped: every FFN expert's slots form one contiguous block of rows,
// cut into chunks that the OpenMP threads take dynamically; each chunk is a few single-threaded GEMMs.
//   forward:  H = X · up^T [rows, 2I];  A = silu(H[:, :I]) * H[:, I:];  O = A · down^T [rows, D]
//   backward: dO = w · dy;  dA = dO · down;  dH = [dA * u * silu'(g) | dA * silu(g)];  dX = dH · up;
//             d_up += dH^T · X;  d_down += dO^T · A;  dw = <dy, O>
// Zero-computation slots never come here (dispatch.h).
#pragma once

#include <cstdint>

#include "core/fast_exp.h"
#include "moe/moe_config.h"
#include "moe/moe_params.h"
#include "moe/moe_state.h"

namespace moepp {

// The SwiGLU activation of one row, a [I] = silu(g) * u with g = h[0:I], u = h[I:2I] (h [2I]); the one
// definition the training experts and the inference decoder share. exp_vec: relative error < 2e-7.
inline void swiglu_row(float* a, const float* h, int64_t I) {
  const float* u = h + I;
  for (int64_t j = 0; j < I; ++j) a[j] = h[j] * (1.0f / (1.0f + exp_vec(-h[j]))) * u[j];
}

// Outputs: st.ffn_h, st.ffn_a, st.ffn_o for all FFN rows. Inputs: st.x_in, st.ffn_offset, st.ffn_slot.
void ffn_experts_forward(MoeForwardState& st, const MoeConfig& cfg, const MoeParams& params);

// Outputs: scratch.ffn_dx [rows, D] (gradient of each row's input), scratch.dw for FFN slots, and the
// up/down gradients (accumulated into grads). Inputs: dy [T, D], st, params.
void ffn_experts_backward(MoeBackwardScratch& scratch, MoeParams& grads, const float* dy,
                          const MoeForwardState& st, const MoeConfig& cfg, const MoeParams& params);

// Multiply-adds of the expert GEMMs for `rows` FFN rows, forward only (2 FLOPs each): 6 · rows · D · I.
inline double ffn_forward_flops(int64_t rows, const MoeConfig& cfg) {
  return 6.0 * static_cast<double>(rows) * static_cast<double>(cfg.hidden) * static_cast<double>(cfg.intermediate);
}

}  // namespace moepp
