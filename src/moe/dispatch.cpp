// Capacity, token dropping and grouping of FFN slots by expert (a counting sort over slots).
#include "moe/dispatch.h"

#include <cmath>

namespace moepp {

std::vector<int64_t> expert_capacity(const MoeConfig& cfg, int64_t T) {
  const int64_t E = cfg.n_experts;
  std::vector<int64_t> cap(E, -1);
  if (!cfg.uses_capacity()) return cap;
  const double gamma = *cfg.capacity_factor;
  const double slots = static_cast<double>(cfg.top_k) * static_cast<double>(T);
  if (cfg.router == RouterKind::kMoepp) {
    const double denom = cfg.tau * static_cast<double>(cfg.n_ffn()) + static_cast<double>(cfg.n_zc());
    // In double, in the order written in docs/layer.md, so that exact integers stay exact.
    const int64_t c_ffn = static_cast<int64_t>(std::ceil(gamma * cfg.tau * slots / denom));
    const int64_t c_zc = static_cast<int64_t>(std::ceil(gamma * slots / denom));
    for (int64_t e = 0; e < E; ++e) cap[e] = cfg.kind(e) == ExpertKind::kFfn ? c_ffn : c_zc;
  } else {
    const int64_t c = static_cast<int64_t>(std::ceil(gamma * slots / static_cast<double>(E)));
    for (int64_t e = 0; e < E; ++e) cap[e] = c;
  }
  return cap;
}

void dispatch_slots(MoeForwardState& st, const MoeConfig& cfg) {
  const int64_t T = st.T, W = cfg.slot_width(), E = cfg.n_experts, NF = cfg.n_ffn();
  // Capacity: admit slots by rank, then token.
  st.dropped_slots = 0;
  const std::vector<int64_t> cap = expert_capacity(cfg, T);
  if (cfg.uses_capacity()) {
    std::vector<int64_t> used(E, 0);
    for (int64_t k = 0; k < W; ++k)
      for (int64_t t = 0; t < T; ++t) {
        const int32_t e = st.ids[t * W + k];
        if (e < 0) continue;
        if (used[e] < cap[e]) {
          ++used[e];
        } else {
          st.kept[t * W + k] = 0;
          ++st.dropped_slots;
        }
      }
  }
  // Counting sort of the kept FFN slots by expert, in token order inside each expert.
  st.ffn_offset.assign(NF + 1, 0);
  st.zc_slots = 0;
  for (int64_t i = 0; i < T * W; ++i) {
    const int32_t e = st.ids[i];
    if (e < 0 || !st.kept[i]) continue;
    if (e < NF) ++st.ffn_offset[e + 1];
    else ++st.zc_slots;
  }
  for (int64_t e = 0; e < NF; ++e) st.ffn_offset[e + 1] += st.ffn_offset[e];
  std::vector<int64_t> fill(st.ffn_offset.begin(), st.ffn_offset.end() - 1);
  st.ffn_slot.resize(st.ffn_offset[NF]);
  st.row_of_slot.assign(T * W, -1);
  for (int64_t i = 0; i < T * W; ++i) {
    const int32_t e = st.ids[i];
    if (e < 0 || e >= NF || !st.kept[i]) continue;
    const int64_t row = fill[e]++;
    st.ffn_slot[row] = static_cast<int32_t>(i);
    st.row_of_slot[i] = static_cast<int32_t>(row);
  }
}

}  // namespace moepp
