// GpuMoeLayer: the steps of the GPU layer in order (see gpu_moe_layer.h); the kernels live in
// gpu_router, gpu_dispatch, gpu_balance, gpu_experts and gpu_combine.
#include "gpu/gpu_moe_layer.h"

#include "core/error.h"
#include "gpu/cuda_check.h"
#include "gpu/device_math.cuh"
#include "gpu/gpu_balance.h"
#include "gpu/gpu_combine.h"
#include "gpu/gpu_dispatch.h"
#include "gpu/gpu_experts.h"
#include "gpu/gpu_router.h"
#include "moe/balance_loss.h"
#include "moe/dispatch.h"

namespace moepp::gpu {
namespace {

__global__ void scale_kernel(float* out, const float* in, float k, int64_t n) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    out[i] = k * in[i];
}

// buf holds n elements of type t.
void ensure_bytes(DeviceBuffer<unsigned char>& buf, int64_t n, ElemType t) {
  buf.ensure(static_cast<size_t>(n) * elem_size(t));
}

}  // namespace

GpuMoeLayer::GpuMoeLayer(MoeConfig cfg, GpuLayerOptions opt) : cfg_(std::move(cfg)), opt_(opt) {
  cfg_.validate("GpuMoeLayer");
  check_gpu_supported(cfg_, "GpuMoeLayer");
}

const void* GpuMoeLayer::up_weights(const GpuMoeParams& prm) const {
  if (opt_.precision == Precision::kF32) return prm.up.get();
  check(prm.up_bf16.size() == prm.up.size(), "GpuMoeLayer: BF16 experts need the weights' BF16 copies (upload with bf16)");
  return prm.up_bf16.get();
}

const void* GpuMoeLayer::down_weights(const GpuMoeParams& prm) const {
  if (opt_.precision == Precision::kF32) return prm.down.get();
  check(prm.down_bf16.size() == prm.down.size(), "GpuMoeLayer: BF16 experts need the weights' BF16 copies (upload with bf16)");
  return prm.down_bf16.get();
}

void GpuMoeLayer::route(GpuMoeState& st, const float* x, const float* z_prev, const GpuMoeParams& prm, int64_t T,
                        GpuContext& ctx) const {
  const MoeConfig& c = cfg_;
  check_gpu_tokens(c, T, "GpuMoeLayer");
  if (c.uses_residual()) check(z_prev != nullptr, "GpuMoeLayer: the gating residual z_prev is required in layer " +
                                                      std::to_string(c.layer_index));
  const int64_t D = c.hidden, E = c.n_experts, K = c.slot_width();
  cudaStream_t s = ctx.s();
  st.T = T;
  st.W = K;
  st.x = x;
  st.z_prev = c.uses_residual() ? z_prev : nullptr;
  if (c.scales_input()) {
    st.x_scaled.ensure(T * D);
    if (T > 0) {
      scale_kernel<<<grid_blocks(T * D, 256), 256, 0, s>>>(st.x_scaled.get(), x, c.input_scale(), T * D);
      launch_check("scale_kernel");
    }
    st.x_in = st.x_scaled.get();
  } else {
    st.x_in = x;
  }
  if (c.two_layer_gate) st.gate_h.ensure(T * c.gate_hidden());
  st.z.ensure(T * E);
  st.s.ensure(T * E);
  st.p.ensure(T * E);
  st.sigma.ensure(T);
  st.norm.ensure(T);
  st.ids.ensure(T * K);
  st.w.ensure(T * K);
  st.kept.ensure(T * K);
  st.ffn_slot.ensure(T * K);
  st.row_of_slot.ensure(T * K);
  st.info.ensure(dispatch_info_size(c));
  st.info_host.assign(dispatch_info_size(c), 0);

  router_logits_forward(st.z.get(), st.gate_h.get(), x, st.z_prev, prm, c, T, ctx);
  router_select_forward(st.ids.get(), st.w.get(), st.kept.get(), st.s.get(), st.p.get(), st.sigma.get(), st.norm.get(),
                        st.z.get(), c, T, s);
  const int64_t* capacity = nullptr;
  if (c.uses_capacity()) {
    upload(st.capacity, expert_capacity(c, T), s);
    capacity = st.capacity.get();
  }
  const DispatchCounts n = dispatch_slots(st.kept.get(), st.info.get(), st.info_host.data(), st.ffn_slot.get(),
                                          st.row_of_slot.get(), st.ids.get(), capacity, c, T, s);
  st.zc_slots = n.zc_slots;
  st.dropped_slots = n.dropped_slots;

  st.aux_loss = 0.0f;
  st.select_frac.assign(E, 0.0f);
  st.aux_dp.ensure(E);
  if (c.training) {
    const int64_t ns = balance_statistics_size(c);
    st.stats.ensure(ns);
    balance_statistics(st.stats.get(), st.ids.get(), st.p.get(), c, T, s);
    std::vector<double> stats = download(st.stats.get(), ns, s);
    std::vector<float> aux_dp(E), relu_count(E);
    float relu_sparsity = 0.0f;
    balance_loss_from_statistics(&st.aux_loss, &relu_sparsity, st.select_frac.data(), aux_dp.data(), relu_count.data(),
                                 stats.data(), c);
    upload(st.aux_dp, aux_dp, s);
  }
}

void GpuMoeLayer::experts_and_combine(float* y, GpuMoeState& st, const GpuMoeParams& prm, GpuContext& ctx) const {
  const MoeConfig& c = cfg_;
  const int64_t D = c.hidden, I = c.intermediate, rows = st.ffn_rows();
  const ElemType tx = expert_type();
  ensure_bytes(st.xr, rows * D, tx);
  ensure_bytes(st.h, rows * 2 * I, tx);
  ensure_bytes(st.a, rows * I, tx);
  ensure_bytes(st.o, rows * D, tx);
  gather_rows(st.xr.get(), st.x_in, st.ffn_slot.get(), tx, rows, st.W, D, ctx.s());
  ffn_experts_forward(st.h.get(), st.a.get(), st.o.get(), st.ptrs, st.xr.get(), st.info_host.data(), up_weights(prm),
                      down_weights(prm), tx, opt_.gemm, c, ctx);
  combine_forward(y, st.x_in, st.o.get(), tx, st.row_of_slot.get(), st.ids.get(), st.w.get(), st.kept.get(), prm, c,
                  st.T, ctx.s());
}

void GpuMoeLayer::forward(float* y, GpuMoeState& st, const float* x, const float* z_prev, const GpuMoeParams& prm,
                          int64_t T, GpuContext& ctx) const {
  route(st, x, z_prev, prm, T, ctx);
  experts_and_combine(y, st, prm, ctx);
}

void GpuMoeLayer::backward(float* dx, float* dz_prev, GpuMoeParams& g, GpuMoeScratch& sc, const float* dy,
                           const float* dz_out, const GpuMoeState& st, const GpuMoeParams& prm, GpuContext& ctx) const {
  const MoeConfig& c = cfg_;
  const int64_t T = st.T, D = c.hidden, I = c.intermediate, E = c.n_experts, rows = st.ffn_rows();
  const ElemType tx = expert_type();
  cudaStream_t s = ctx.s();
  zero_async(dx, T * D, s);
  if (dz_prev && c.uses_residual()) zero_async(dz_prev, T * E, s);
  sc.dw.ensure(T * st.W);
  zero_async(sc.dw.get(), T * st.W, s);
  ensure_bytes(sc.dor, rows * D, tx);
  ensure_bytes(sc.da, rows * I, tx);
  ensure_bytes(sc.dh, rows * 2 * I, tx);
  ensure_bytes(sc.dxr, rows * D, tx);
  sc.coef_x.ensure(T * 2 * c.n_constant);
  sc.coef_dy.ensure(T * c.n_constant);
  sc.dz.ensure(T * E);
  sc.dp.ensure(T * E);
  if (c.two_layer_gate) sc.dgate_h.ensure(T * c.gate_hidden());

  ffn_slot_backward(sc.dor.get(), sc.dw.get(), dy, st.o.get(), st.w.get(), st.ffn_slot.get(), tx, rows, st.W, D, s);
  ffn_experts_backward(sc.dxr.get(), g, sc.da.get(), sc.dh.get(), sc.ptrs, sc.dor.get(),
                       st.xr.get(), st.h.get(), st.a.get(), st.info_host.data(), up_weights(prm), down_weights(prm), tx,
                       opt_.gemm, c, ctx);
  combine_backward(dx, sc.dw.get(), g, sc.coef_x.get(), sc.coef_dy.get(), dy, sc.dxr.get(), tx, st.x_in,
                   st.row_of_slot.get(), st.ids.get(), st.w.get(), st.kept.get(), prm, c, T, ctx);
  router_backward(dx, c.uses_residual() ? dz_prev : nullptr, g, sc.dz.get(), sc.dp.get(), sc.dgate_h.get(),
                  sc.dw.get(), dz_out, c.training ? st.aux_dp.get() : nullptr, st.ids.get(), st.w.get(), st.z.get(),
                  st.gate_h.get(), st.p.get(), st.sigma.get(), st.norm.get(), st.x, st.z_prev, prm, c, T, ctx);
}

}  // namespace moepp::gpu
