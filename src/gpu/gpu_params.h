// GpuMoeParams: the tensors of one MoE++ layer (moe/moe_params.h) on the device, used both for the
// weights and for their gradients. The FFN experts' tensors are stacked so that one pointer and a
// stride reach every expert: up [N_FFN, 2I, D], down [N_FFN, D, I]; the constant experts' likewise:
// const_wg [N_C, 2, D], const_v [N_C, D]. Weights for Precision::kBF16 also hold BF16 copies of up and
// down (what the expert GEMMs read; the fp32 tensors stay the masters). Owns its device memory; moves
// only. Uploads and downloads are ordered on the given stream (downloads wait for it).
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

#include "gpu/device_memory.h"
#include "gpu/gpu_support.h"
#include "moe/moe_config.h"
#include "moe/moe_params.h"

namespace moepp::gpu {

struct GpuMoeParams {
  DeviceBuffer<float> wg;        // [E, D] one-layer router, else empty
  DeviceBuffer<float> wg0, wg2;  // [8E, D], [E, 8E] two-layer router, else empty
  DeviceBuffer<float> gate_map;  // [E, E] when the MoeParams it came from has one
  DeviceBuffer<float> up, down, const_wg, const_v;
  DeviceBuffer<__nv_bfloat16> up_bf16, down_bf16;  // Precision::kBF16 weights only

  // The device copy of p (shaped for cfg: MoeLayer::check_params). With kBF16 the BF16 copies are made.
  static GpuMoeParams upload(const MoeParams& p, const MoeConfig& cfg, Precision prec, cudaStream_t s);
  // Zero-filled, fp32 only, with the tensors MoeParams::zeros(cfg) has (the gradients' target).
  static GpuMoeParams zeros(const MoeConfig& cfg, cudaStream_t s);
  // out (shaped as MoeParams::zeros(cfg)) = these tensors (fp32).
  void download(MoeParams& out, const MoeConfig& cfg, cudaStream_t s) const;
  // Rewrites up_bf16 / down_bf16 from the fp32 up / down (after the fp32 tensors changed).
  void refresh_bf16(cudaStream_t s);
  void zero(cudaStream_t s);
};

// dst[i] = bf16(src[i]) (round to nearest even), i < n, on `s`.
void convert_to_bf16(__nv_bfloat16* dst, const float* src, int64_t n, cudaStream_t s);

}  // namespace moepp::gpu
