// The FFN (SwiGLU) experts, run grouped: every FFN expert's slots form one contiguous block of rows,
// cut into chunks that the OpenMP threads take dynamically; each chunk is a few single-threaded GEMMs.
//   forward:  H = X · up^T [rows, 2I];  A = silu(H[:, :I]) * H[:, I:];  O = A · down^T [rows, D]
//   backward: dO = w · dy;  dA = dO · down;  dH = [dA * u * silu'(g) | dA * silu(g)];  dX = dH · up;
//             d_up += dH^T · X;  d_down += dO^T · A;  dw = <dy, O>
// Zero-computation slots never come here (dispatch.h). Kernel convention: outputs first, then
// workspace, then inputs, then settings and sizes.
#pragma once

#include <cstdint>

#include "core/fast_exp.h"
#include "moe/moe_config.h"
#include "moe/moe_params.h"
#include "moe/moe_state.h"  // FfnRowsView

namespace moepp {

// The SwiGLU activation of one row, a [I] = silu(g) * u with g = h[0:I], u = h[I:2I] (h [2I]); the one
// definition the training experts and the inference decoder share. exp_vec: relative error < 2e-7.
inline void swiglu_row(float* a, const float* h, int64_t I) {
  const float* u = h + I;
  for (int64_t j = 0; j < I; ++j) a[j] = h[j] * (1.0f / (1.0f + exp_vec(-h[j]))) * u[j];
}

// h [rows, 2I], a [rows, I], o [rows, D] for every FFN row (rows = rows.offset[N_FFN]); row r's input
// is row rows.slot[r] / W of x_in [T, D]. W = the slot width (cfg.slot_width()).
void ffn_experts_forward(float* h, float* a, float* o, const float* x_in, const FfnRowsView& rows,
                         const MoeParams& params, const MoeConfig& cfg, int64_t W);

// Outputs: dx_rows [rows, D] (gradient of each row's input), dw [T, W] (the FFN slots' entries
// written), the up/down gradients accumulated into grads. Workspace (overwritten): x_rows [rows, D],
// do_rows [rows, D], dh [rows, 2I]. Inputs: dy [T, D], x_in [T, D], the forward's h, a, o, the slot
// weights w [T, W], rows.
void ffn_experts_backward(float* dx_rows, float* dw, MoeParams& grads, float* x_rows, float* do_rows, float* dh,
                          const float* dy, const float* x_in, const float* h, const float* a, const float* o,
                          const float* w, const FfnRowsView& rows, const MoeParams& params, const MoeConfig& cfg,
                          int64_t W);

// Multiply-adds of the expert GEMMs for `rows` FFN rows, forward only (2 FLOPs each): 6 · rows · D · I.
inline double ffn_forward_flops(int64_t rows, const MoeConfig& cfg) {
  return 6.0 * static_cast<double>(rows) * static_cast<double>(cfg.hidden) * static_cast<double>(cfg.intermediate);
}

}  // namespace moepp
