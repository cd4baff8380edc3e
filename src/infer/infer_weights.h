// InferWeights: the weights of a decoder as inference uses them. The large matrices (attention
// projections, FFN experts, lm_head) are WeightMatrix in F32, BF16 or INT8; the small ones (norms,
// router, gating-residual map, constant experts) and the embedding table stay fp32 tensors.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/tensor.h"
#include "infer/weight_matrix.h"
#include "model/model_config.h"
#include "model/model_params.h"
#include "moe/moe_params.h"

namespace moepp {

namespace io {
class WeightSource;
}

struct InferWeights {
  WeightDType dtype = WeightDType::kF32;
  Tensor embed;  // [V, D]
  struct Layer {
    Tensor attn_norm, mlp_norm;  // [D]
    WeightMatrix wq, wk, wv, wo;
    MoeParams moe_small;  // router (wg or wg0/wg2), gate_map, constant experts; up/down left empty
    std::vector<WeightMatrix> up, down;  // per FFN expert: [2I, D], [D, I]
  };
  std::vector<Layer> layers;
  Tensor final_norm;  // [D]
  WeightMatrix lm_head;

  // From fp32 training parameters (checked against cfg).
  static InferWeights from_params(const ModelConfig& cfg, const ModelParams& p, WeightDType d);
  // Streams a checkpoint tensor by tensor (never more than one fp32 tensor at a time). Missing,
  // unexpected or mis-shaped tensors throw moepp::Error naming src.source() and the tensor.
  static InferWeights load(const ModelConfig& cfg, const io::WeightSource& src, WeightDType d);
  // The same, and with d == kBF16 the large BF16 matrices of a memory-mapped source (safetensors) are
  // read in place through the mapping, which the weights then keep alive (no copy, no conversion).
  static InferWeights load(const ModelConfig& cfg, std::shared_ptr<const io::WeightSource> src, WeightDType d);

  size_t bytes() const;         // memory held (views into a mapping not included)
  size_t mapped_bytes() const;  // matrices read in place from a mapping

 private:
  static InferWeights load_impl(const ModelConfig& cfg, const io::WeightSource& src, WeightDType d,
                                std::shared_ptr<const io::WeightSource> owner);
};

}  // namespace moepp
