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

// kept [T, W] (in: the router's; out: capacity drops set to 0, admitting by rank, then token, while
// capacity[e] allows; capacity [E], -1 = unlimited, see expert_capacity). Then groups the kept FFN slots
// by expert in token order: ffn_offset [N_FFN + 1], ffn_slot [T * W] (the first ffn_offset[N_FFN]
// entries written), row_of_slot [T * W] (-1 for every slot that is not a kept FFN slot).
// ids [T, W], W = cfg.slot_width().
DispatchCounts dispatch_slots(uint8_t* kept, int64_t* ffn_offset, int32_t* ffn_slot, int32_t* row_of_slot,
                              const int32_t* ids, const int64_t* capacity, const MoeConfig& cfg, int64_t T);

}  // namespace moepp
