// MoeLayer: the order of the steps of forward and backward (the steps live in router, dispatch,
// balance_loss, ffn_experts and combine).
#include "moe/moe_layer.h"

#include "core/error.h"
#include "core/profile.h"
#include "moe/balance_loss.h"
#include "moe/combine.h"
#include "moe/dispatch.h"
#include "moe/ffn_experts.h"
#include "moe/router.h"

namespace moepp {

void set_expert_input(MoeForwardState& st, const float* x, int64_t T, const MoeConfig& cfg) {
  st.x = x;
  if (!cfg.scales_input()) {
    st.x_in = x;
    return;
  }
  ensure_shape(st.x_scaled, {T, cfg.hidden});
  const float k = cfg.input_scale();
  const int64_t n = T * cfg.hidden;
  for (int64_t i = 0; i < n; ++i) st.x_scaled.data[i] = k * x[i];
  st.x_in = st.x_scaled.ptr();
}

MoeLayer::MoeLayer(MoeConfig cfg) : cfg_(std::move(cfg)) { cfg_.validate("MoeLayer"); }

void MoeLayer::check_params(const MoeParams& params, const std::string& source) const {
  const std::vector<MoeParamSpec> specs = moe_param_specs(cfg_);
  for (const MoeParamSpec& s : specs) {
    const Tensor* t = params.slot(s.kind, s.index);
    check(t != nullptr && !t->empty(), source + ": expected tensor '" + s.name + "'");
    check(t->shape == s.shape, source + ": tensor '" + s.name + "' has shape " + shape_str(t->shape) +
                                   ", expected " + shape_str(s.shape));
  }
  check(params.tensor_count() == specs.size(), source + ": expected " + std::to_string(specs.size()) +
                                                   " tensors, got " + std::to_string(params.tensor_count()));
}

void moe_route(MoeForwardState& st, const float* x, const float* z_prev, const MoeParams& prm, const MoeConfig& cfg,
               int64_t T) {
  st.resize(cfg, T);
  set_expert_input(st, x, T, cfg);
  st.z_prev = cfg.uses_residual() ? z_prev : nullptr;
  router_logits_forward(st.z.ptr(), st.gate_h.empty() ? nullptr : st.gate_h.ptr(), x, st.z_prev, prm, cfg, T);
  router_select_forward(st.ids.data(), st.w.data(), st.kept.data(), st.s.ptr(), st.p.ptr(), st.sigma.data(),
                        st.norm.data(), st.z.ptr(), cfg, T);
  const std::vector<int64_t> capacity = expert_capacity(cfg, T);
  const DispatchCounts n = dispatch_slots(st.kept.data(), st.ffn_offset.data(), st.ffn_slot.data(),
                                          st.row_of_slot.data(), st.ids.data(), capacity.data(), cfg, T);
  st.dropped_slots = n.dropped_slots;
  st.zc_slots = n.zc_slots;
  balance_loss_forward(&st.aux_loss, &st.relu_sparsity, st.select_frac.data(), st.aux_dp.data(), st.relu_count.data(),
                       st.ids.data(), st.p.ptr(), st.z.ptr(), cfg, T);
}

void MoeLayer::forward(Tensor& y, Tensor& z_out, MoeForwardState& st, const Tensor& x, const Tensor* z_prev,
                       const MoeParams& prm) const {
  const int64_t D = cfg_.hidden, E = cfg_.n_experts, I = cfg_.intermediate;
  check(x.shape.size() == 2 && x.shape[1] == D, "MoeLayer: x must be [T, " + std::to_string(D) + "], got " + shape_str(x.shape));
  const int64_t T = x.shape[0];
  if (cfg_.uses_residual()) {
    check(z_prev != nullptr, "MoeLayer: the gating residual z_prev is required in layer " + std::to_string(cfg_.layer_index));
    check(z_prev->shape == std::vector<int64_t>{T, E},
          "MoeLayer: z_prev must be " + shape_str({T, E}) + ", got " + shape_str(z_prev->shape));
  }
  {
    ProfileScope ps("fwd.moe.router+dispatch+balance");
    moe_route(st, x.ptr(), cfg_.uses_residual() ? z_prev->ptr() : nullptr, prm, cfg_, T);
  }
  {
    ProfileScope ps("fwd.moe.experts");
    const int64_t rows = st.ffn_rows();
    ensure_shape(st.ffn_h, {rows, 2 * I});
    ensure_shape(st.ffn_a, {rows, I});
    ensure_shape(st.ffn_o, {rows, D});
    ffn_experts_forward(st.ffn_h.ptr(), st.ffn_a.ptr(), st.ffn_o.ptr(), st.x_in, st.rows(), prm, cfg_, st.W);
  }
  ProfileScope ps("fwd.moe.combine");
  ensure_shape(y, {T, D});
  combine_forward(y.ptr(), st.x_in, st.ffn_o.ptr(), st.row_of_slot.data(), st.slots(), prm, cfg_, T);
  z_out.shape = st.z.shape;
  z_out.data.assign(st.z.data.begin(), st.z.data.end());
}

void MoeLayer::backward(Tensor& dx, Tensor* dz_prev, MoeParams& grads, MoeBackwardScratch& sc, const Tensor& dy,
                        const Tensor* dz_out, MoeForwardState& st, const MoeParams& prm) const {
  const int64_t T = st.T, D = cfg_.hidden, E = cfg_.n_experts, I = cfg_.intermediate;
  check(dy.shape == std::vector<int64_t>{T, D}, "MoeLayer: dy must be " + shape_str({T, D}) + ", got " + shape_str(dy.shape));
  if (dz_out)
    check(dz_out->shape == std::vector<int64_t>{T, E},
          "MoeLayer: dz_out must be " + shape_str({T, E}) + ", got " + shape_str(dz_out->shape));
  sc.dw.assign(T * st.W, 0.0f);
  dx = Tensor({T, D});
  if (dz_prev) *dz_prev = Tensor({T, E});
  const int64_t rows = st.ffn_rows();
  {
    ProfileScope ps("bwd.moe.experts");
    ensure_shape(sc.ffn_x, {rows, D});
    ensure_shape(sc.ffn_do, {rows, D});
    ensure_shape(sc.ffn_dh, {rows, 2 * I});
    ensure_shape(sc.ffn_dx, {rows, D});
    ffn_experts_backward(sc.ffn_dx.ptr(), sc.dw.data(), grads, sc.ffn_x.ptr(), sc.ffn_do.ptr(), sc.ffn_dh.ptr(),
                         dy.ptr(), st.x_in, st.ffn_h.ptr(), st.ffn_a.ptr(), st.ffn_o.ptr(), st.w.data(), st.rows(), prm,
                         cfg_, st.W);
  }
  {
    ProfileScope ps("bwd.moe.combine");
    combine_backward(dx.ptr(), sc.dw.data(), grads, dy.ptr(), sc.ffn_dx.ptr(), st.x_in, st.row_of_slot.data(),
                     st.slots(), prm, cfg_, T);
  }
  ProfileScope ps("bwd.moe.router");
  const bool aux = cfg_.training && cfg_.router != RouterKind::kRelu;
  router_backward(dx.ptr(), (dz_prev && cfg_.uses_residual()) ? dz_prev->ptr() : nullptr, grads, sc.dw.data(),
                  dz_out ? dz_out->ptr() : nullptr, aux ? st.aux_dp.data() : nullptr, st.relu_count.data(),
                  st.router(), st.slots(), st.x, st.z_prev, prm, cfg_, T);
}

}  // namespace moepp
