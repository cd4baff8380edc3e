// ExpertParallelFfn: an FfnExecutor whose FFN experts are split in contiguous blocks over the ranks of
// an expert-parallel group (rank g owns experts [g * N_FFN / G, (g + 1) * N_FFN / G)). Per MoE block:
// one allgather of every rank's per-expert row counts, an all-to-all-v of the kept FFN rows to their
// experts' owners, the owner's grouped GEMMs, and an all-to-all-v of the outputs back; the backward
// sends the outputs' gradients the same way and the input gradients back. Zero-computation slots, the
// routing weights and the gating residual stay at the token's home rank (the block applies them).
// What the backward needs is kept in st.ep. Every rank of the group must run every block, also with
// no rows.
#pragma once

#include <cstdint>

#include "comm/comm.h"
#include "moe/ffn_executor.h"

namespace moepp {

class ExpertParallelFfn : public FfnExecutor {
 public:
  // group: the expert-parallel group (its size must divide N_FFN; checked on use). params: the experts
  // of this rank at their global indices (the others may be empty); grads: where backward accumulates
  // this rank's experts' gradients (may be null for forward only). All must outlive the executor.
  ExpertParallelFfn(Comm& group, const MoeParams& params, MoeParams* grads)
      : group_(group), params_(params), grads_(grads) {}
  void forward(float* o, MoeForwardState& st, const MoeConfig& cfg) override;
  void backward(float* dx_rows, MoeBackwardScratch& sc, const float* do_rows, const MoeForwardState& st,
                const MoeConfig& cfg) override;

  // The first expert this group rank owns and how many: the contiguous block of N_FFN / size.
  static int64_t experts_per_rank(const MoeConfig& cfg, int group_size);

 private:
  Comm& group_;
  const MoeParams& params_;
  MoeParams* grads_;
};

}  // namespace moepp
