// Dispatch on the GPU (the CPU's is moe/dispatch.h, whose capacity rule and counters this reuses): the
// capacity drops (training mode; admission by slot rank, then token) and the grouping of the kept FFN
// slots by expert in token order, so that only FFN slots reach the expert GEMMs, without padding.
// Forward only: the backward reuses the grouping (ffn_slot, row_of_slot). Kernel convention: outputs,
// then scratch, then inputs, then settings and sizes; device pointers unless named _host.
#pragma once

#include <cstdint>

#include "moe/dispatch.h"
#include "moe/moe_config.h"

#include <cuda_runtime_api.h>

namespace moepp::gpu {

// Entries of the dispatch record `info` (device, int64): [0, N_FFN] the FFN row offsets (expert e owns
// rows [info[e], info[e + 1])), then the kept zero-computation slots, then the capacity drops.
inline int64_t dispatch_info_size(const MoeConfig& cfg) { return cfg.n_ffn() + 3; }

// kept [T, K] (in: the router's; out: capacity drops set to 0); info [dispatch_info_size] (above);
// info_host: its host copy (same size; the offsets size the expert GEMMs); ffn_slot [T * K] (the first
// rows entries: the slot t * K + k of each row); row_of_slot [T * K] (-1 for every slot that is not a
// kept FFN slot). capacity [E] (device, expert_capacity's values; null: dropless). Waits for the stream
// (the host copy). Returns the counts of moe/dispatch.h.
DispatchCounts dispatch_slots(uint8_t* kept, int64_t* info, int64_t* info_host, int32_t* ffn_slot, int32_t* row_of_slot,
                              const int32_t* ids, const int64_t* capacity, const MoeConfig& cfg, int64_t T,
                              cudaStream_t stream);

}  // namespace moepp::gpu
