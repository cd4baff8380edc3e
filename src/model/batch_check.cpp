// The checks of a batch before a model pass (see batch_check.h).
#include "model/batch_check.h"

#include "core/error.h"

namespace moepp {

void check_model_batch(const ModelConfig& cfg, const int32_t* tokens, const int32_t* targets, int64_t B, int64_t T,
                       const std::string& source) {
  const int64_t V = cfg.vocab;
  check(B > 0 && T > 0, source + ": B and T must be > 0, got B=" + std::to_string(B) + " T=" + std::to_string(T));
  check(T <= cfg.max_pos, source + ": sequence length " + std::to_string(T) +
                              " exceeds max_position_embeddings = " + std::to_string(cfg.max_pos));
  const int64_t N = B * T;
  for (int64_t n = 0; n < N; ++n) {
    check(tokens[n] >= 0 && tokens[n] < V, source + ": token id " + std::to_string(tokens[n]) + " at position " +
                                               std::to_string(n) + " is outside the vocabulary [0, " +
                                               std::to_string(V) + ")");
    if (targets)
      check(targets[n] >= -1 && targets[n] < V, source + ": target id " + std::to_string(targets[n]) +
                                                    " at position " + std::to_string(n) +
                                                    " is outside the vocabulary (or -1 = ignored) [0, " +
                                                    std::to_string(V) + ")");
  }
}

}  // namespace moepp
