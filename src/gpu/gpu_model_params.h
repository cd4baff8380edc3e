// GpuModelParams: every tensor of the decoder (model/model_params.h) on the device, used both for the
// weights and for their gradients. The dense tensors are one buffer each; each block's MoE++ tensors
// are a GpuMoeParams (FFN and constant experts stacked). Weights for Precision::kBF16 also hold BF16
// copies of the matrices the BF16 products read (q, k, v, o projections, lm_head; the experts' in
// GpuMoeParams); the fp32 tensors are the master weights, and refresh_bf16 rewrites the copies after
// they change. Parameters come from and go back to the CPU's ModelParams (upload / download), so
// checkpoints are written by the CPU's code in its format. Owns its device memory; moves only; every
// copy is ordered on the given stream (download waits for it).
#pragma once

#include <cstdint>
#include <vector>

#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

#include "gpu/device_memory.h"
#include "gpu/gpu_params.h"
#include "gpu/gpu_support.h"
#include "model/model_config.h"
#include "model/model_params.h"

namespace moepp::gpu {

struct GpuModelParams {
  DeviceBuffer<float> embed;  // [V, D]
  struct Layer {
    DeviceBuffer<float> attn_norm, wq, wk, wv, wo, mlp_norm;  // shapes of ModelParams::Layer
    GpuMoeParams moe;
    DeviceBuffer<__nv_bfloat16> wq_b, wk_b, wv_b, wo_b;  // BF16 copies (kBF16 weights only)
  };
  std::vector<Layer> layers;
  DeviceBuffer<float> final_norm;  // [D]
  DeviceBuffer<float> lm_head;     // [V, D]
  DeviceBuffer<__nv_bfloat16> lm_head_b;
  Precision precision = Precision::kF32;

  // The device copy of p (checked against cfg: Model::check_params's shapes). kBF16 makes the BF16 copies.
  static GpuModelParams upload(const ModelParams& p, const ModelConfig& cfg, Precision prec, cudaStream_t s);
  // Zero-filled fp32 tensors with ModelParams::zeros(cfg)'s shapes (the gradients' target).
  static GpuModelParams zeros(const ModelConfig& cfg, cudaStream_t s);
  // out (shaped as ModelParams::zeros(cfg)) = these fp32 tensors. Waits for the stream.
  void download(ModelParams& out, const ModelConfig& cfg, cudaStream_t s) const;
  // Rewrites every BF16 copy from its fp32 master (no-op for kF32).
  void refresh_bf16(cudaStream_t s);
  void zero(cudaStream_t s);

  // The device span of the tensor `spec` names (an expert's slice of a stacked buffer); {null, 0} when
  // these params lack it (layer 0's optional gate_map).
  struct Span {
    float* p = nullptr;
    int64_t n = 0;
  };
  Span span(const ParamSpec& spec);
};

}  // namespace moepp::gpu
