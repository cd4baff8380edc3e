// MoeForwardState::resize: the buffers whose sizes T and the config fix (see moe_state.h).
#include "moe/moe_state.h"

namespace moepp {

void MoeForwardState::resize(const MoeConfig& cfg, int64_t tokens) {
  T = tokens;
  W = cfg.slot_width();
  const int64_t E = cfg.n_experts;
  ensure_shape(z, {T, E});
  if (cfg.two_layer_gate) ensure_shape(gate_h, {T, cfg.gate_hidden()});
  else gate_h = Tensor();
  if (cfg.router != RouterKind::kRelu) {
    ensure_shape(s, {T, E});
    ensure_shape(p, {T, E});
    sigma.resize(T);
    norm.resize(T);
  }
  ids.resize(T * W);
  w.resize(T * W);
  kept.resize(T * W);
  ffn_offset.resize(cfg.n_ffn() + 1);
  ffn_slot.resize(T * W);
  row_of_slot.resize(T * W);
  select_frac.resize(E);
  aux_dp.resize(E);
  relu_count.resize(E);
}

}  // namespace moepp
