// The checks of a batch before a model pass (the CPU Model and the GPU model run the same ones): B and
// T positive, T within max_position_embeddings, token ids in [0, V) and target ids in [-1, V).
#pragma once

#include <cstdint>
#include <string>

#include "model/model_config.h"

namespace moepp {

// tokens [B*T]; targets [B*T] or null. Throws moepp::Error prefixed "<source>: " naming the first
// offending value and its position.
void check_model_batch(const ModelConfig& cfg, const int32_t* tokens, const int32_t* targets, int64_t B, int64_t T,
                       const std::string& source);

}  // namespace moepp
