// Capacity, token dropping and grouping of FFN slots by expert (a counting sort over slots).
#include "moe/dispatch.h"

#include <algorithm>
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

void selections_by_rank(int64_t* counts, const int32_t* ids, const MoeConfig& cfg, int64_t T) {
  const int64_t W = cfg.slot_width(), E = cfg.n_experts;
  std::fill(counts, counts + W * E, int64_t{0});
  for (int64_t t = 0; t < T; ++t)
    for (int64_t k = 0; k < W; ++k)
      if (ids[t * W + k] >= 0) ++counts[k * E + ids[t * W + k]];
}

namespace {

// The capacity drops of dispatch_slots (see there): kept slots beyond their expert's capacity set to 0.
void admit_by_capacity(DispatchCounts& n, uint8_t* kept, const int32_t* ids, const int64_t* capacity,
                       const int64_t* selected_before, const MoeConfig& cfg, int64_t T) {
  const int64_t W = cfg.slot_width(), E = cfg.n_experts;
  std::vector<int64_t> before(W * E, 0);
  if (selected_before) {
    std::copy(selected_before, selected_before + W * E, before.begin());
  } else {
    selections_by_rank(before.data(), ids, cfg, T);  // then prefix sums over the ranks
    int64_t* b = before.data();
    std::vector<int64_t> run(E, 0);
    for (int64_t k = 0; k < W; ++k)
      for (int64_t e = 0; e < E; ++e) {
        const int64_t c = b[k * E + e];
        b[k * E + e] = run[e];
        run[e] += c;
      }
  }
  for (int64_t k = 0; k < W; ++k)
    for (int64_t t = 0; t < T; ++t) {
      const int32_t e = ids[t * W + k];
      if (e < 0 || !kept[t * W + k] || capacity[e] < 0) continue;
      if (before[k * E + e]++ >= capacity[e]) {
        kept[t * W + k] = 0;
        ++n.dropped_slots;
      }
    }
}

}  // namespace

DispatchCounts dispatch_slots(uint8_t* kept, int64_t* ffn_offset, int32_t* ffn_slot, int32_t* row_of_slot,
                              const int32_t* ids, const int64_t* capacity, const int64_t* selected_before,
                              const MoeConfig& cfg, int64_t T) {
  const int64_t W = cfg.slot_width(), E = cfg.n_experts, NF = cfg.n_ffn();
  DispatchCounts n;
  // Capacity: admit slots by rank, then token: a slot is kept while fewer than capacity[e] selections of
  // its expert come before it in that order. Nothing to admit when no expert is limited (inference).
  if (std::any_of(capacity, capacity + E, [](int64_t c) { return c >= 0; }))
    admit_by_capacity(n, kept, ids, capacity, selected_before, cfg, T);
  // Counting sort of the kept FFN slots by expert, in token order inside each expert.
  std::fill(ffn_offset, ffn_offset + NF + 1, int64_t{0});
  for (int64_t i = 0; i < T * W; ++i) {
    const int32_t e = ids[i];
    if (e < 0 || !kept[i]) continue;
    if (e < NF) ++ffn_offset[e + 1];
    else ++n.zc_slots;
  }
  for (int64_t e = 0; e < NF; ++e) ffn_offset[e + 1] += ffn_offset[e];
  std::vector<int64_t> fill(ffn_offset, ffn_offset + NF);
  for (int64_t i = 0; i < T * W; ++i) {
    const int32_t e = ids[i];
    row_of_slot[i] = -1;
    if (e < 0 || e >= NF || !kept[i]) continue;
    const int64_t row = fill[e]++;
    ffn_slot[row] = static_cast<int32_t>(i);
    row_of_slot[i] = static_cast<int32_t>(row);
  }
  return n;
}

}  // namespace moepp
