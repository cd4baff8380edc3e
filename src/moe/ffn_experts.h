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

// Where the FFN rows' inputs are: row r's input is row slot[r] / width of x (the tokens' expert input,
// gathered by slot), or, with slot == nullptr, row r of x (rows already gathered, as the owner of
// experts receives them in expert parallelism).
struct FfnRowInputs {
  const float* x = nullptr;
  const int32_t* slot = nullptr;
  int64_t width = 1;
};

// The rows of experts first_expert .. first_expert + n_experts - 1: rows [offset[i], offset[i+1]) belong
// to expert first_expert + i (offset has n_experts + 1 entries, offset[0] = 0). Writes h [rows, 2I],
// a [rows, I] (kept for the backward) and o [rows, D] (the unweighted expert outputs).
void ffn_experts_forward(float* h, float* a, float* o, const FfnRowInputs& in, const int64_t* offset,
                         const MoeParams& params, const MoeConfig& cfg, int64_t first_expert, int64_t n_experts);

// The token side of the FFN backward, at the tokens' home: do_rows [rows, D] = w[slot] · dy[slot / W]
// and dw[slot] = <dy[slot / W], o_rows[r]> for every FFN row r (its slot = slot[r]).
void ffn_slot_backward(float* do_rows, float* dw, const float* dy, const float* o_rows, const float* w,
                       const int32_t* slot, int64_t rows, int64_t W, int64_t D);

// The expert side: dx_rows [rows, D] (gradient of each row's input) from do_rows, and the up/down
// gradients of the experts accumulated into grads. Workspace (overwritten): x_rows [rows, D] (the
// gathered inputs; unused, may be null, when in.slot is null), dh [rows, 2I]. h, a: the forward's.
void ffn_experts_backward(float* dx_rows, MoeParams& grads, float* x_rows, float* dh, const float* do_rows,
                          const FfnRowInputs& in, const float* h, const float* a, const int64_t* offset,
                          const MoeParams& params, const MoeConfig& cfg, int64_t first_expert, int64_t n_experts);

// Multiply-adds of the expert GEMMs for `rows` FFN rows, forward only (2 FLOPs each): 6 · rows · D · I.
inline double ffn_forward_flops(int64_t rows, const MoeConfig& cfg) {
  return 6.0 * static_cast<double>(rows) * static_cast<double>(cfg.hidden) * static_cast<double>(cfg.intermediate);
}

}  // namespace moepp
