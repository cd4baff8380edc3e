// MatrixFfnExperts (see matrix_experts.h).
#include "infer/matrix_experts.h"

#include <cstring>
#include <string>

#include "core/error.h"
#include "moe/ffn_experts.h"

namespace moepp {

void MatrixFfnExperts::forward(float* o, MoeForwardState& st, const MoeConfig& cfg) {
  const int64_t D = cfg.hidden, I = cfg.intermediate, end = end_ < 0 ? cfg.n_ffn() : end_;
  check(first_ >= 0 && first_ <= end && end <= cfg.n_ffn() && end <= static_cast<int64_t>(up_.size()) &&
            end <= static_cast<int64_t>(down_.size()),
        "MatrixFfnExperts: expert range [" + std::to_string(first_) + ", " + std::to_string(end) +
            ") outside the layer's " + std::to_string(cfg.n_ffn()) + " FFN experts");
  for (int64_t e = first_; e < end; ++e) {
    const int64_t r0 = st.ffn_offset[e], n = st.ffn_offset[e + 1] - r0;
    if (n == 0) continue;
    ensure_shape(x_, {n, D});
    ensure_shape(h_, {n, 2 * I});
    ensure_shape(a_, {n, I});
    for (int64_t i = 0; i < n; ++i)
      std::memcpy(x_.ptr() + i * D, st.x_in + static_cast<int64_t>(st.ffn_slot[r0 + i] / st.W) * D, sizeof(float) * D);
    up_[e].matmul(h_.ptr(), x_.ptr(), n);
    float* hp = h_.ptr();
    float* ap = a_.ptr();
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; ++i) swiglu_row(ap + i * I, hp + i * 2 * I, I);
    down_[e].matmul(o + r0 * D, a_.ptr(), n);
  }
}

void MatrixFfnExperts::backward(float*, MoeBackwardScratch&, const float*, const MoeForwardState&, const MoeConfig&) {
  throw Error("MatrixFfnExperts: inference weights have no backward");
}

}  // namespace moepp
