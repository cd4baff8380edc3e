// LocalFfnExperts (see ffn_executor.h): the grouped fp32 kernels of ffn_experts.h over all FFN experts.
#include "moe/ffn_executor.h"

#include "core/error.h"
#include "moe/ffn_experts.h"

namespace moepp {

void LocalFfnExperts::forward(float* o, MoeForwardState& st, const MoeConfig& cfg) {
  const int64_t rows = st.ffn_rows(), I = cfg.intermediate;
  ensure_shape(st.ffn_h, {rows, 2 * I});
  ensure_shape(st.ffn_a, {rows, I});
  ffn_experts_forward(st.ffn_h.ptr(), st.ffn_a.ptr(), o, {st.x_in, st.ffn_slot.data(), st.W}, st.ffn_offset.data(),
                      params_, cfg, 0, cfg.n_ffn());
}

void LocalFfnExperts::backward(float* dx_rows, MoeBackwardScratch& sc, const float* do_rows, const MoeForwardState& st,
                               const MoeConfig& cfg) {
  check(grads_ != nullptr, "LocalFfnExperts: backward needs a gradient target");
  const int64_t rows = st.ffn_rows(), D = cfg.hidden, I = cfg.intermediate;
  ensure_shape(sc.ffn_x, {rows, D});
  ensure_shape(sc.ffn_dh, {rows, 2 * I});
  ffn_experts_backward(dx_rows, *grads_, sc.ffn_x.ptr(), sc.ffn_dh.ptr(), do_rows, {st.x_in, st.ffn_slot.data(), st.W},
                       st.ffn_h.ptr(), st.ffn_a.ptr(), st.ffn_offset.data(), params_, cfg, 0, cfg.n_ffn());
}

}  // namespace moepp
