// The CPU router's share of FFN slots under a bias, and its bisection (see cpu_router_bias.h).
#include "cpu_router_bias.h"

#include "moe/moe_state.h"
#include "moe/router.h"

namespace moepp {

double ffn_fraction(const MoeConfig& c, MoeParams& p, const Tensor& x, float b) {
  for (int64_t e = c.n_ffn(); e < c.n_experts; ++e) p.wg.data[e * c.hidden] = b;
  MoeForwardState st;
  st.resize(c, x.shape[0]);
  router_logits_forward(st.z.ptr(), nullptr, x.ptr(), nullptr, p, c, st.T);
  router_select_forward(st.ids.data(), st.w.data(), st.kept.data(), st.s.ptr(), st.p.ptr(), st.sigma.data(),
                        st.norm.data(), st.z.ptr(), c, st.T);
  int64_t ffn = 0;
  for (int32_t id : st.ids) ffn += id < c.n_ffn();
  return static_cast<double>(ffn) / static_cast<double>(st.ids.size());
}

float bias_for_fraction(const MoeConfig& c, MoeParams& p, const Tensor& x, double target) {
  return bisect_bias([&](float b) { return ffn_fraction(c, p, x, b); }, target);
}

}  // namespace moepp
