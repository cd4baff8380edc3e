// Dispatch: decides which slots reach their expert (per-type capacity with token dropping, training
// mode only) and groups the FFN slots by expert, so that only FFN slots reach the expert GEMMs.
#pragma once

#include "moe/moe_config.h"
#include "moe/moe_state.h"

namespace moepp {

// Per-expert capacity in slots for T tokens (docs/layer.md, "Capacity"); -1 = unlimited.
std::vector<int64_t> expert_capacity(const MoeConfig& cfg, int64_t T);

// Inputs: st.ids, st.kept (from the router). Outputs: st.kept (capacity drops), st.dropped_slots,
// st.zc_slots, st.ffn_offset, st.ffn_slot, st.row_of_slot.
void dispatch_slots(MoeForwardState& st, const MoeConfig& cfg);

}  // namespace moepp
