// GpuMoeLayer: one MoE++ layer (docs/layer.md) on the GPU, forward and backward, with the CPU layer's
// semantics (moe/moe_layer.h) and config: router -> dispatch (capacity in training mode; FFN slots
// grouped by expert) -> FFN experts (grouped GEMMs over the FFN slots only) -> fused zero / copy /
// constant experts + weighted sum; the backward of all of it, the balance loss included. F32 or BF16
// experts (gpu_support.h); per-expert or grouped expert GEMMs (gpu_gemm.h). The layer owns its config
// and options; the state, scratch, parameters and gradients are the caller's (GpuMoeState keeps what
// backward needs). All tensors are device pointers; everything runs on ctx's stream, with two waits per
// forward (the FFN row offsets and, in training mode, the balance statistics come to the host).
#pragma once

#include <cstdint>
#include <vector>

#include "gpu/device_memory.h"
#include "gpu/gpu_context.h"
#include "gpu/gpu_gemm.h"
#include "gpu/gpu_params.h"
#include "gpu/gpu_support.h"
#include "moe/moe_config.h"

namespace moepp::gpu {

struct GpuLayerOptions {
  Precision precision = Precision::kF32;
  GroupedGemmMode gemm = GroupedGemmMode::kPerProduct;
};

// The buffers of one forward pass, reused across calls (reallocated only when they grow).
struct GpuMoeState {
  int64_t T = 0, W = 0;
  const float* x = nullptr;       // [T, D] the caller's input; must outlive backward
  const float* z_prev = nullptr;  // [T, E] or null
  const float* x_in = nullptr;    // x or x_scaled
  DeviceBuffer<float> x_scaled;   // [T, D] K·x when cfg.scales_input()
  DeviceBuffer<float> gate_h;     // [T, 8E] two-layer router
  DeviceBuffer<float> z, s, p;    // [T, E] logits (the layer's router_logits), scores, softmax
  DeviceBuffer<float> sigma, norm;  // [T]
  DeviceBuffer<int32_t> ids;      // [T, K]
  DeviceBuffer<float> w;          // [T, K] routing weights (before capacity)
  DeviceBuffer<uint8_t> kept;     // [T, K]
  DeviceBuffer<int64_t> capacity; // [E] (training with capacity)
  DeviceBuffer<int64_t> info;     // dispatch record (gpu_dispatch.h)
  std::vector<int64_t> info_host; // its host copy: info_host[0 .. N_FFN] are the FFN row offsets
  DeviceBuffer<int32_t> ffn_slot, row_of_slot;  // [T * K]
  DeviceBuffer<unsigned char> xr, h, a, o;      // [rows, D / 2I / I / D] of the experts' element type
  DeviceBuffer<const void*> ptrs;               // grouped GEMM pointer arrays
  DeviceBuffer<double> stats;     // balance statistics (training)
  DeviceBuffer<float> aux_dp;     // [E] d aux_loss / d p_te (training)

  // Results for the host.
  float aux_loss = 0.0f;            // training mode
  std::vector<float> select_frac;   // [E] f_i (training mode)
  int64_t zc_slots = 0, dropped_slots = 0;
  int64_t ffn_rows() const { return info_host.empty() ? 0 : info_host[info_host.size() - 3]; }
};

// Scratch of the backward pass, reused across calls.
struct GpuMoeScratch {
  DeviceBuffer<float> dw;                         // [T, K]
  DeviceBuffer<unsigned char> dor, da, dh, dxr;   // [rows, D / I / 2I / D] experts' element type
  DeviceBuffer<float> coef_x, coef_dy;            // [T, 2 N_C], [T, N_C]
  DeviceBuffer<float> dz, dp, dgate_h;            // [T, E], [T, E], [T, 8E]
  DeviceBuffer<const void*> ptrs;                 // grouped GEMM pointer arrays
};

class GpuMoeLayer {
 public:
  // Throws moepp::Error when cfg is invalid or not supported on the GPU (gpu_support.h).
  GpuMoeLayer(MoeConfig cfg, GpuLayerOptions opt);
  const MoeConfig& config() const { return cfg_; }
  const GpuLayerOptions& options() const { return opt_; }
  ElemType expert_type() const { return opt_.precision == Precision::kF32 ? ElemType::kF32 : ElemType::kBF16; }

  // y [T, D] (overwritten); the router logits are st.z. x [T, D]; z_prev [T, E] when
  // config().uses_residual() (ignored otherwise). prm: weights (with BF16 copies for kBF16). Training
  // mode also computes st.aux_loss and applies capacity. forward = route + experts_and_combine.
  void forward(float* y, GpuMoeState& st, const float* x, const float* z_prev, const GpuMoeParams& prm, int64_t T,
               GpuContext& ctx) const;
  // The routing half: expert input, logits, slots, dispatch, balance loss.
  void route(GpuMoeState& st, const float* x, const float* z_prev, const GpuMoeParams& prm, int64_t T,
             GpuContext& ctx) const;
  // The experts' half (the paper's "expert forward"): the FFN rows and the fused combine into y.
  void experts_and_combine(float* y, GpuMoeState& st, const GpuMoeParams& prm, GpuContext& ctx) const;

  // dx [T, D] and dz_prev [T, E] (may be null) are overwritten; the parameter gradients are
  // accumulated into grads (fp32, GpuMoeParams::zeros shapes). dy [T, D]; dz_out [T, E] the gradient of
  // the router logits (may be null). Includes st.aux_loss's gradient in training mode.
  void backward(float* dx, float* dz_prev, GpuMoeParams& grads, GpuMoeScratch& sc, const float* dy, const float* dz_out,
                const GpuMoeState& st, const GpuMoeParams& prm, GpuContext& ctx) const;

 private:
  const void* up_weights(const GpuMoeParams& prm) const;
  const void* down_weights(const GpuMoeParams& prm) const;
  MoeConfig cfg_;
  GpuLayerOptions opt_;
};

}  // namespace moepp::gpu
