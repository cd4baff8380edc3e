// MoeLayer: shape checks around the MoE block (moe_block.h), whose steps live in router, dispatch,
// balance_loss, ffn_experts and combine.
#include "moe/moe_layer.h"

#include "core/error.h"
#include "core/profile.h"

namespace moepp {

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
                       const MoeParams& prm, FfnExecutor* experts, Comm* batch) const {
  const int64_t D = cfg_.hidden, E = cfg_.n_experts;
  check(x.shape.size() == 2 && x.shape[1] == D, "MoeLayer: x must be [T, " + std::to_string(D) + "], got " + shape_str(x.shape));
  const int64_t T = x.shape[0];
  if (cfg_.uses_residual()) {
    check(z_prev != nullptr, "MoeLayer: the gating residual z_prev is required in layer " + std::to_string(cfg_.layer_index));
    check(z_prev->shape == std::vector<int64_t>{T, E},
          "MoeLayer: z_prev must be " + shape_str({T, E}) + ", got " + shape_str(z_prev->shape));
  }
  {
    ProfileScope ps("fwd.moe.router+dispatch+balance");
    moe_route(st, x.ptr(), cfg_.uses_residual() ? z_prev->ptr() : nullptr, prm, cfg_, T, batch);
  }
  LocalFfnExperts local(prm, nullptr);
  ensure_shape(y, {T, D});
  moe_block_combine(y.ptr(), st, experts ? *experts : local, prm, cfg_);
  z_out.shape = st.z.shape;
  z_out.data.assign(st.z.data.begin(), st.z.data.end());
}

void MoeLayer::backward(Tensor& dx, Tensor* dz_prev, MoeParams& grads, MoeBackwardScratch& sc, const Tensor& dy,
                        const Tensor* dz_out, MoeForwardState& st, const MoeParams& prm, FfnExecutor* experts) const {
  const int64_t T = st.T, D = cfg_.hidden, E = cfg_.n_experts;
  check(dy.shape == std::vector<int64_t>{T, D}, "MoeLayer: dy must be " + shape_str({T, D}) + ", got " + shape_str(dy.shape));
  if (dz_out)
    check(dz_out->shape == std::vector<int64_t>{T, E},
          "MoeLayer: dz_out must be " + shape_str({T, E}) + ", got " + shape_str(dz_out->shape));
  dx = Tensor({T, D});
  if (dz_prev) *dz_prev = Tensor({T, E});
  LocalFfnExperts local(prm, &grads);
  moe_block_backward(dx.ptr(), dz_prev ? dz_prev->ptr() : nullptr, grads, sc, dy.ptr(), dz_out ? dz_out->ptr() : nullptr,
                     st, experts ? *experts : local, prm, cfg_);
}

}  // namespace moepp
