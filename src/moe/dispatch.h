// Dispatch: decides which slots reach their expert (per-type capacity with token dropping, training
// mode only) and groups the FFN slots by expert, so that only FFN slots reach the expert GEMMs.
// Kernel convention: outputs first, then inputs, then settings and sizes.
#pragma once

#include <cstdint>
#include <vector>

#include "moe/moe_config.h"

namespace moepp {

// Per-expert capacity in slots for T tokens (docs/layer.md, "Capacity"); -1 = unlimited.
std::vector<int64_t> expert_capacity(const MoeConfig& cfg, int64_t T);

struct DispatchCounts {
  int64_t dropped_slots = 0;  // slots dropped by capacity
  int64_t zc_slots = 0;       // kept slots on zero-computation experts
};

// counts [W * E]: how many of T tokens select expert e at slot rank k, at counts[k * E + e].
// ids [T, W], W = cfg.slot_width().
void selections_by_rank(int64_t* counts, const int32_t* ids, const MoeConfig& cfg, int64_t T);

// kept [T, W] (in: the router's; out: capacity drops set to 0). Admission goes by slot rank, then token
// (docs/layer.md): a slot is kept while fewer than capacity[e] selections of its expert come before it
// (capacity [E], -1 = unlimited, see expert_capacity). selected_before [W * E]: the selections of e that
// come before this process's rank-k slots, for a batch split over processes (the slots of ranks < k of
// every process, and those of rank k of the processes before this one; from selections_by_rank of each);
// null = this process holds the whole batch. Then groups the kept FFN slots by expert in token order:
// ffn_offset [N_FFN + 1], ffn_slot [T * W] (the first ffn_offset[N_FFN] entries written), row_of_slot
// [T * W] (-1 for every slot that is not a kept FFN slot). ids [T, W], W = cfg.slot_width().
DispatchCounts dispatch_slots(uint8_t* kept, int64_t* ffn_offset, int32_t* ffn_slot, int32_t* row_of_slot,
                              const int32_t* ids, const int64_t* capacity, const int64_t* selected_before,
                              const MoeConfig& cfg, int64_t T);

}  // namespace moepp
