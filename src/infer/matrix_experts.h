// MatrixFfnExperts: the inference decoder's FfnExecutor (moe/ffn_executor.h): the FFN experts as
// WeightMatrix (F32, BF16 or INT8) products, one expert at a time with its rows gathered, each product
// using the OpenMP threads. Forward only.
#pragma once

#include <vector>

#include "core/tensor.h"
#include "infer/weight_matrix.h"
#include "moe/ffn_executor.h"

namespace moepp {

class MatrixFfnExperts : public FfnExecutor {
 public:
  // up, down: per FFN expert [2I, D], [D, I]. x, h, a: workspace reused across calls. All must outlive
  // the executor.
  MatrixFfnExperts(const std::vector<WeightMatrix>& up, const std::vector<WeightMatrix>& down, Tensor& x, Tensor& h,
                   Tensor& a)
      : up_(up), down_(down), x_(x), h_(h), a_(a) {}
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
};

}  // namespace moepp
