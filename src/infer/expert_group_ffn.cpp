// ExpertGroupFfn (see expert_group_ffn.h).
#include "infer/expert_group_ffn.h"

#include <chrono>
#include <cstring>

#include "core/error.h"

namespace moepp {

void ExpertGroupFfn::forward(float* o, MoeForwardState& st, const MoeConfig& cfg) {
  const int64_t rows = st.ffn_rows(), D = cfg.hidden;
  if (rows == 0) return;  // every rank routed the same tokens: all skip together
  const int64_t r0 = st.ffn_offset[first_], r1 = st.ffn_offset[end_];
  std::memset(o, 0, sizeof(float) * r0 * D);
  std::memset(o + r1 * D, 0, sizeof(float) * (rows - r1) * D);
  mine_.forward(o, st, cfg);
  const auto t0 = std::chrono::steady_clock::now();
  group_.allreduce_sum(o, rows * D);
  stats_.comm_seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  stats_.calls += 1;
  stats_.rows += static_cast<uint64_t>(rows);
  stats_.bytes += static_cast<uint64_t>(rows * D) * sizeof(float);
}

void ExpertGroupFfn::backward(float*, MoeBackwardScratch&, const float*, const MoeForwardState&, const MoeConfig&) {
  throw Error("ExpertGroupFfn: inference weights have no backward");
}

}  // namespace moepp
