// MatrixFfnExperts: the inference decoder's FfnExecutor (moe/ffn_executor.h): the FFN experts as
// WeightMatrix (F32, BF16 or INT8) products, one expert at a time with its rows gathered, each product
// using the OpenMP threads. Forward only. It may run a range of the FFN experts only (expert-parallel
// inference: infer/expert_group_ffn.h); the output rows of the other experts are then left untouched.
#pragma once

#include <vector>

#include "core/tensor.h"
#include "infer/weight_matrix.h"
#include "moe/ffn_executor.h"

namespace moepp {

class MatrixFfnExperts : public FfnExecutor {
 public:
  // up, down: per FFN expert [2I, D], [D, I] (indexed by FFN expert; only those of [first, end) are
  // read, the others may be empty). x, h, a: workspace reused across calls. All must outlive the
  // executor. end < 0: up to the last FFN expert.
  MatrixFfnExperts(const std::vector<WeightMatrix>& up, const std::vector<WeightMatrix>& down, Tensor& x, Tensor& h,
                   Tensor& a, int64_t first = 0, int64_t end = -1)
      : up_(up), down_(down), x_(x), h_(h), a_(a), first_(first), end_(end) {}
  // Writes the rows of the experts [first, end) of o [rows, D]; the other rows are not written.
  void forward(float* o, MoeForwardState& st, const MoeConfig& cfg) override;
  // Throws: inference weights do not train.
  void backward(float* dx_rows, MoeBackwardScratch& sc, const float* do_rows, const MoeForwardState& st,
                const MoeConfig& cfg) override;

 private:
  const std::vector<WeightMatrix>& up_;
  const std::vector<WeightMatrix>& down_;
  Tensor& x_;
  Tensor& h_;
  Tensor& a_;
  int64_t first_, end_;
};

}  // namespace moepp
