// The balance loss's statistics on the GPU: per-expert selection counts and sums of p over the tokens,
// in moe/balance_loss.h's layout, so that the loss, its constant per-expert gradient and the other
// counters come from the CPU layer's balance_loss_from_statistics (one implementation of the losses).
// Not for the relu router. Kernel convention: outputs, then inputs, then settings and sizes.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "moe/moe_config.h"

namespace moepp::gpu {

// stats [balance_statistics_size(cfg)] (device, double) = counts [E], sums of p [E], 0, T. ids [T, K];
// p [T, E].
void balance_statistics(double* stats, const int32_t* ids, const float* p, const MoeConfig& cfg, int64_t T,
                        cudaStream_t stream);

}  // namespace moepp::gpu
