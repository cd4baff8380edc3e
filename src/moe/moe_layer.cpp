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

void MoeLayer::forward(Tensor& y, Tensor& z_out, MoeForwardState& st, const Tensor& x, const Tensor* z_prev,
                       const MoeParams& prm) const {
  const int64_t D = cfg_.hidden, E = cfg_.n_experts;
  check(x.shape.size() == 2 && x.shape[1] == D, "MoeLayer: x must be [T, " + std::to_string(D) + "], got " + shape_str(x.shape));
  const int64_t T = x.shape[0];
  st.T = T;
  st.W = cfg_.slot_width();
  set_expert_input(st, x.ptr(), T, cfg_);
  st.z_prev = nullptr;
  if (cfg_.uses_residual()) {
    check(z_prev != nullptr, "MoeLayer: the gating residual z_prev is required in layer " + std::to_string(cfg_.layer_index));
    check(z_prev->shape == std::vector<int64_t>{T, E},
          "MoeLayer: z_prev must be " + shape_str({T, E}) + ", got " + shape_str(z_prev->shape));
    st.z_prev = z_prev->ptr();
  }
  {
    ProfileScope ps("fwd.moe.router+dispatch+balance");
    router_forward(st, cfg_, prm);
    dispatch_slots(st, cfg_);
    balance_loss_forward(st, cfg_);
  }
  {
    ProfileScope ps("fwd.moe.experts");
    ffn_experts_forward(st, cfg_, prm);
  }
  ProfileScope ps("fwd.moe.combine");
  ensure_shape(y, {T, D});
  combine_forward(y.ptr(), st, cfg_, prm);
  z_out.shape = st.z.shape;
  z_out.data.assign(st.z.data.begin(), st.z.data.end());
}

void MoeLayer::backward(Tensor& dx, Tensor* dz_prev, MoeParams& grads, MoeBackwardScratch& sc, const Tensor& dy,
                        const Tensor* dz_out, MoeForwardState& st, const MoeParams& prm) const {
  const int64_t T = st.T, D = cfg_.hidden, E = cfg_.n_experts;
  check(dy.shape == std::vector<int64_t>{T, D}, "MoeLayer: dy must be " + shape_str({T, D}) + ", got " + shape_str(dy.shape));
  if (dz_out)
    check(dz_out->shape == std::vector<int64_t>{T, E},
          "MoeLayer: dz_out must be " + shape_str({T, E}) + ", got " + shape_str(dz_out->shape));
  sc.dw.assign(T * st.W, 0.0f);
  dx = Tensor({T, D});
  if (dz_prev) *dz_prev = Tensor({T, E});
  {
    ProfileScope ps("bwd.moe.experts");
    ffn_experts_backward(sc, grads, dy.ptr(), st, cfg_, prm);
  }
  {
    ProfileScope ps("bwd.moe.combine");
    combine_backward(dx.ptr(), sc, grads, dy.ptr(), st, cfg_, prm);
  }
  ProfileScope ps("bwd.moe.router");
  router_backward(dx.ptr(), (dz_prev && cfg_.uses_residual()) ? dz_prev->ptr() : nullptr, grads, sc.dw.data(),
                  dz_out ? dz_out->ptr() : nullptr, st, cfg_, prm);
}

}  // namespace moepp
