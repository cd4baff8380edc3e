// ExpertShard: which FFN experts one process of an expert-parallel group holds, the one rule for the
// layer (ExpertParallelFfn), checkpoints (model/checkpoint.h), training (train/train_parallel.h) and
// inference (infer/infer_weights.h). A layer's N FFN experts split evenly in contiguous blocks: shard g
// of `count` holds [g·N/count, (g+1)·N/count). The default is every expert.
#pragma once

#include <cstdint>
#include <utility>

namespace moepp {

struct ExpertShard {
  int index = 0, count = 1;
  // [first, end) of a layer with n_ffn FFN experts. Throws moepp::Error when count does not divide
  // n_ffn or index is outside [0, count).
  std::pair<int64_t, int64_t> range(int64_t n_ffn) const;
  // Whether this shard holds expert e of a layer with n_ffn FFN experts (range's errors).
  bool holds(int64_t e, int64_t n_ffn) const {
    const auto [first, end] = range(n_ffn);
    return e >= first && e < end;
  }
};

}  // namespace moepp
