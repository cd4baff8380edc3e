// FfnExecutor: how an MoE block computes its FFN rows, the one pluggable piece of the block
// (moe_block.h). The block routes the tokens and combines the outputs; an executor turns the kept FFN
// rows, grouped by expert (st.rows(), inputs st.x_in), into the experts' unweighted outputs, and in
// training turns the outputs' gradients back into the rows' input gradients and the experts' parameter
// gradients. Implementations: LocalFfnExperts (fp32 parameters in this process; training and tests),
// the inference decoder's weight-matrix experts and their expert-parallel wrapper (infer/:
// MatrixFfnExperts, ExpertGroupFfn), and ExpertParallelFfn (experts spread over the ranks of a Comm
// group). An executor may keep what its backward needs in st (ffn_h, ffn_a, the
// expert-parallel exchange record); it is used by one thread at a time.
#pragma once

#include "moe/moe_config.h"
#include "moe/moe_params.h"
#include "moe/moe_state.h"

namespace moepp {

class FfnExecutor {
 public:
  virtual ~FfnExecutor() = default;
  // o [rows, D] (rows = st.ffn_rows()): row r's expert output, unweighted.
  virtual void forward(float* o, MoeForwardState& st, const MoeConfig& cfg) = 0;
  // dx_rows [rows, D]: the gradient of each row's input, from do_rows [rows, D] (the gradient of its
  // output); the experts' parameter gradients are accumulated where the executor keeps them. Only
  // after forward on the same st. Throws moepp::Error for an executor that cannot train.
  virtual void backward(float* dx_rows, MoeBackwardScratch& sc, const float* do_rows, const MoeForwardState& st,
                        const MoeConfig& cfg) = 0;
};

// The FFN experts of this process in fp32 (ffn_experts.h), rows gathered from st.x_in.
class LocalFfnExperts : public FfnExecutor {
 public:
  // params: the experts' weights; grads: where backward accumulates their gradients (may be null for
  // forward only). Both must outlive the executor.
  LocalFfnExperts(const MoeParams& params, MoeParams* grads) : params_(params), grads_(grads) {}
  void forward(float* o, MoeForwardState& st, const MoeConfig& cfg) override;
  void backward(float* dx_rows, MoeBackwardScratch& sc, const float* do_rows, const MoeForwardState& st,
                const MoeConfig& cfg) override;

 private:
  const MoeParams& params_;
  MoeParams* grads_;
};

}  // namespace moepp
