// ExpertGroupFfn: the FfnExecutor of expert-parallel inference. Every rank of an expert group runs the
// decoder's dense part on the same tokens, so every rank holds the same FFN rows (st.rows()); rank g
// computes the rows of its own experts [g·N/G, (g+1)·N/G) with the weight-matrix experts
// (matrix_experts.h), leaves every other row zero, and one allreduce_sum over the group of the rows
// buffer [rows, D] gives every rank every row. Adding zeros is exact, so the result is bit-identical
// to one process computing all experts. Zero-computation slots never enter the buffer. Forward only.
#pragma once

#include <cstdint>

#include "comm/comm.h"
#include "infer/matrix_experts.h"
#include "moe/ffn_executor.h"

namespace moepp {

// What one layer's executor exchanged, accumulated over forward calls.
struct ExpertGroupStats {
  uint64_t calls = 0;         // allreduces (forward passes with at least one FFN row)
  uint64_t rows = 0;          // FFN rows reduced
  uint64_t bytes = 0;         // bytes of the reduced buffers (rows * D * 4)
  double comm_seconds = 0.0;  // wall time inside allreduce_sum (includes waiting for slower ranks)
};

class ExpertGroupFfn : public FfnExecutor {
 public:
  // mine: this rank's experts (a MatrixFfnExperts over this rank's range only). group: every rank of
  // it calls forward with the same routing, in the same order. stats is added to. All must outlive
  // the executor; one thread at a time (Comm's rule).
  ExpertGroupFfn(MatrixFfnExperts& mine, int64_t first, int64_t end, Comm& group, ExpertGroupStats& stats)
      : mine_(mine), first_(first), end_(end), group_(group), stats_(stats) {}
  void forward(float* o, MoeForwardState& st, const MoeConfig& cfg) override;
  // Throws: inference weights do not train.
  void backward(float* dx_rows, MoeBackwardScratch& sc, const float* do_rows, const MoeForwardState& st,
                const MoeConfig& cfg) override;

 private:
  MatrixFfnExperts& mine_;
  int64_t first_, end_;
  Comm& group_;
  ExpertGroupStats& stats_;
};

}  // namespace moepp
