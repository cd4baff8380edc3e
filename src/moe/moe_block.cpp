// The MoE++ block: routing, pluggable FFN rows, combine, and the backward (see moe_block.h).
#include "moe/moe_block.h"

#include <vector>

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

namespace {

// Capacity admission of a batch split over the ranks of `batch`: the batch's token count, and for every
// (slot rank k, expert e) the selections that come before this rank's rank-k slots.
void batch_admission(int64_t* batch_tokens, std::vector<int64_t>& before, const int32_t* ids, Comm& batch,
                     const MoeConfig& cfg, int64_t T) {
  const int64_t W = cfg.slot_width(), E = cfg.n_experts, P = batch.size(), me = batch.rank();
  std::vector<int64_t> mine(W * E + 1);
  selections_by_rank(mine.data(), ids, cfg, T);
  mine[W * E] = T;
  std::vector<int64_t> all(P * (W * E + 1));
  batch.allgather(all.data(), mine.data(), W * E + 1);
  before.assign(W * E, 0);
  *batch_tokens = 0;
  for (int64_t p = 0; p < P; ++p) {
    const int64_t* c = all.data() + p * (W * E + 1);
    *batch_tokens += c[W * E];
    for (int64_t k = 0; k < W; ++k)
      for (int64_t e = 0; e < E; ++e) {
        // every rank's slots of ranks < k, and rank k of the ranks before this one
        for (int64_t k2 = 0; k2 < k; ++k2) before[k * E + e] += c[k2 * E + e];
        if (p < me) before[k * E + e] += c[k * E + e];
      }
  }
}

}  // namespace

void moe_route(MoeForwardState& st, const float* x, const float* z_prev, const MoeParams& prm, const MoeConfig& cfg,
               int64_t T, Comm* batch) {
  st.resize(cfg, T);
  set_expert_input(st, x, T, cfg);
  st.z_prev = cfg.uses_residual() ? z_prev : nullptr;
  router_logits_forward(st.z.ptr(), st.gate_h.empty() ? nullptr : st.gate_h.ptr(), x, st.z_prev, prm, cfg, T);
  router_select_forward(st.ids.data(), st.w.data(), st.kept.data(), st.s.ptr(), st.p.ptr(), st.sigma.data(),
                        st.norm.data(), st.z.ptr(), cfg, T);
  int64_t batch_tokens = T;
  std::vector<int64_t> before;
  if (batch && cfg.uses_capacity()) batch_admission(&batch_tokens, before, st.ids.data(), *batch, cfg, T);
  const std::vector<int64_t> capacity = expert_capacity(cfg, batch_tokens);
  const DispatchCounts n =
      dispatch_slots(st.kept.data(), st.ffn_offset.data(), st.ffn_slot.data(), st.row_of_slot.data(), st.ids.data(),
                     capacity.data(), before.empty() ? nullptr : before.data(), cfg, T);
  st.dropped_slots = n.dropped_slots;
  st.zc_slots = n.zc_slots;
  std::vector<double> stats(balance_statistics_size(cfg));
  balance_statistics(stats.data(), st.ids.data(), st.p.ptr(), st.z.ptr(), cfg, T);
  if (batch) batch->allreduce_sum(stats.data(), static_cast<int64_t>(stats.size()));
  balance_loss_from_statistics(&st.aux_loss, &st.relu_sparsity, st.select_frac.data(), st.aux_dp.data(),
                               st.relu_count.data(), stats.data(), cfg);
}

void moe_block_combine(float* y, MoeForwardState& st, FfnExecutor& experts, const MoeParams& prm,
                       const MoeConfig& cfg) {
  {
    ProfileScope ps("fwd.moe.experts");
    ensure_shape(st.ffn_o, {st.ffn_rows(), cfg.hidden});
    experts.forward(st.ffn_o.ptr(), st, cfg);
  }
  ProfileScope ps("fwd.moe.combine");
  combine_forward(y, st.x_in, st.ffn_o.ptr(), st.row_of_slot.data(), st.slots(), prm, cfg, st.T);
}

void moe_block_backward(float* dx, float* dz_prev, MoeParams& grads, MoeBackwardScratch& sc, const float* dy,
                        const float* dz_out, const MoeForwardState& st, FfnExecutor& experts, const MoeParams& prm,
                        const MoeConfig& cfg) {
  const int64_t T = st.T, D = cfg.hidden, rows = st.ffn_rows();
  sc.dw.assign(T * st.W, 0.0f);
  {
    ProfileScope ps("bwd.moe.experts");
    ensure_shape(sc.ffn_do, {rows, D});
    ensure_shape(sc.ffn_dx, {rows, D});
    ffn_slot_backward(sc.ffn_do.ptr(), sc.dw.data(), dy, st.ffn_o.ptr(), st.w.data(), st.ffn_slot.data(), rows, st.W,
                      D);
    experts.backward(sc.ffn_dx.ptr(), sc, sc.ffn_do.ptr(), st, cfg);
  }
  {
    ProfileScope ps("bwd.moe.combine");
    combine_backward(dx, sc.dw.data(), grads, dy, sc.ffn_dx.ptr(), st.x_in, st.row_of_slot.data(), st.slots(), prm,
                     cfg, T);
  }
  ProfileScope ps("bwd.moe.router");
  const bool aux = cfg.training && cfg.router != RouterKind::kRelu;
  router_backward(dx, cfg.uses_residual() ? dz_prev : nullptr, grads, sc.dw.data(), dz_out,
                  aux ? st.aux_dp.data() : nullptr, st.relu_count.data(), st.router(), st.slots(), st.x, st.z_prev, prm,
                  cfg, T);
}

}  // namespace moepp
