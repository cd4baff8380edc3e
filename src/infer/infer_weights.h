// InferWeights: the weights of a decoder as inference uses them. The large matrices (attention
// projections, FFN experts, lm_head) are WeightMatrix in F32, BF16 or INT8; the small ones (norms,
// router, gating-residual map, constant experts) and the embedding table stay fp32 tensors. In
// expert-parallel inference a process holds only its shard of each layer's FFN experts (ExpertShard):
// the others are never read from the checkpoint and stay empty.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "core/tensor.h"
#include "infer/weight_matrix.h"
#include "moe/expert_shard.h"
#include "model/model_config.h"
#include "model/model_params.h"
#include "moe/moe_params.h"

namespace moepp {

namespace io {
class WeightSource;
class SafetensorsWriter;
}

// Whether a checkpoint tensor is one of the decoder's large matrices (attention projections, FFN
// experts' up and down, lm_head): the tensors held as WeightMatrix in the weight dtype. The rest
// (embedding, norms, routers, gate_map, constant experts) stay fp32.
bool is_weight_matrix(const ParamSpec& spec);

// Quantised checkpoints (`moepp convert --dtype int8|q4`, docs/checkpoints.md): a matrix N stored as
// INT8 is N: I8 [O, I] and N.scales: F32 [O]; as Q4, N: U8 [O, q4_blocks(I) x 16] (the codes) and
// N.scales: F16 [O, q4_blocks(I)]. Loaded with the same --dtype, they are used in place from the
// memory mapping.
constexpr const char* kQuantScalesSuffix = ".scales";

// Adds to w, under `name`, the stored values of a matrix [O, I] in dtype d (INT8 and Q4 as above with
// their scales; BF16 and F32 as plain tensors), made by `make` only when w.write() reaches each tensor
// (SafetensorsWriter::add_lazy): once for the data and, for INT8 / Q4, once more for the scales, so that
// nothing is held between them. `make` must return a matrix of that shape and dtype (checked).
void add_stored_matrix(io::SafetensorsWriter& w, const std::string& name, int64_t O, int64_t I, WeightDType d,
                       std::function<WeightMatrix()> make);

struct InferWeights {
  WeightDType dtype = WeightDType::kF32;
  ExpertShard shard;  // which FFN experts are held
  Tensor embed;  // [V, D]
  struct Layer {
    Tensor attn_norm, mlp_norm;  // [D]
    WeightMatrix wq, wk, wv, wo;
    MoeParams moe_small;  // router (wg or wg0/wg2), gate_map, constant experts; up/down left empty
    std::vector<WeightMatrix> up, down;  // per FFN expert: [2I, D], [D, I]; empty outside the shard
    int64_t ffn_first = 0, ffn_end = 0;  // the FFN experts held: [ffn_first, ffn_end)
  };
  std::vector<Layer> layers;
  Tensor final_norm;  // [D]
  WeightMatrix lm_head;

  // From fp32 training parameters (checked against cfg); only the shard's FFN experts are converted.
  static InferWeights from_params(const ModelConfig& cfg, const ModelParams& p, WeightDType d, ExpertShard shard = {});
  // Streams a checkpoint tensor by tensor (never more than one fp32 tensor at a time); the FFN experts
  // outside the shard are checked (present, shape) but never read. Missing, unexpected or mis-shaped
  // tensors throw moepp::Error naming src.source() and the tensor.
  static InferWeights load(const ModelConfig& cfg, const io::WeightSource& src, WeightDType d, ExpertShard shard = {});
  // The same, and the large matrices of a memory-mapped source (safetensors) already stored in the
  // dtype d (BF16 tensors, or a quantised checkpoint's INT8 / Q4 tensors with their scales) are read in
  // place through the mapping, which the weights then keep alive (no copy, no conversion). A quantised
  // checkpoint loads only with its own dtype (a clear error otherwise).
  static InferWeights load(const ModelConfig& cfg, std::shared_ptr<const io::WeightSource> src, WeightDType d,
                           ExpertShard shard = {});

  // BF16 weights: every matrix also keeps a copy in oneDNN's blocked layout for the products of many
  // rows (prefill, evaluation; WeightMatrix::pack_for_many_rows), which doubles their memory. Returns
  // the bytes added (0 for other dtypes or where the CPU lacks native bf16 products). Call before the
  // weights are shared between threads.
  size_t pack_bf16_for_many_rows();

  size_t bytes() const;         // memory held (views into a mapping not included; packed copies included)
  size_t mapped_bytes() const;  // matrices read in place from a mapping
  // FNV-1a 64 of everything but the FFN experts (shapes, dtypes and stored values), in a fixed order:
  // equal on every rank of an expert group that loaded the same checkpoint in the same dtype.
  uint64_t dense_hash() const;

 private:
  static InferWeights load_impl(const ModelConfig& cfg, const io::WeightSource& src, WeightDType d,
                                std::shared_ptr<const io::WeightSource> owner, ExpertShard shard);
};

}  // namespace moepp
