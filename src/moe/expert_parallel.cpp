// ExpertParallelFfn (see expert_parallel.h): gather -> counts -> all-to-all -> expert-major order ->
// grouped GEMMs -> back to sender order -> all-to-all back; the backward the same way.
#include "moe/expert_parallel.h"

#include <chrono>
#include <cstring>
#include <string>
#include <vector>

#include "core/error.h"
#include "moe/expert_shard.h"
#include "moe/ffn_experts.h"

namespace moepp {
namespace {

double now_s() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// Rows exchanged with other ranks (not counting this rank's rows to itself).
int64_t remote_rows(const std::vector<int64_t>& rows, int me) {
  int64_t n = 0;
  for (size_t p = 0; p < rows.size(); ++p)
    if (static_cast<int>(p) != me) n += rows[p];
  return n;
}

// out[r] = in[perm[r]] (to expert-major order) or out[perm[r]] = in[r] (back), rows of D floats.
void permute_rows(float* out, const float* in, const std::vector<int64_t>& perm, int64_t D, bool inverse) {
  const int64_t n = static_cast<int64_t>(perm.size());
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < n; ++r) {
    if (inverse) std::memcpy(out + perm[r] * D, in + r * D, sizeof(float) * D);
    else std::memcpy(out + r * D, in + perm[r] * D, sizeof(float) * D);
  }
}

// Rows [sent rows, D] from their home ranks to the experts' owners, arriving in expert-major order in
// expert_major [received rows, D] (x.buf_b is the receive buffer). Returns the seconds in communication.
double to_owners(float* expert_major, const float* home_rows, ExpertExchange& x, Comm& group, int64_t D) {
  const int64_t got = x.recv_offset.back();
  ensure_shape(x.buf_b, {got, D});
  const double t0 = now_s();
  group.alltoallv_rows(x.buf_b.ptr(), x.recv_rows.data(), home_rows, x.send_rows.data(), D);
  const double dt = now_s() - t0;
  permute_rows(expert_major, x.buf_b.ptr(), x.perm, D, false);
  return dt;
}

// The reverse: rows in expert-major order back to their home ranks, in the order they were sent.
double to_homes(float* home_rows, const float* expert_major, ExpertExchange& x, Comm& group, int64_t D) {
  ensure_shape(x.buf_b, {x.recv_offset.back(), D});
  permute_rows(x.buf_b.ptr(), expert_major, x.perm, D, true);
  const double t0 = now_s();
  group.alltoallv_rows(home_rows, x.send_rows.data(), x.buf_b.ptr(), x.recv_rows.data(), D);
  return now_s() - t0;
}

}  // namespace

int64_t ExpertParallelFfn::experts_per_rank(const MoeConfig& cfg, int group_size) {
  return ExpertShard{0, group_size}.range(cfg.n_ffn()).second;  // the one rule (and its errors)
}

void ExpertParallelFfn::forward(float* o, MoeForwardState& st, const MoeConfig& cfg) {
  const int P = group_.size(), me = group_.rank();
  const int64_t NF = cfg.n_ffn(), per = experts_per_rank(cfg, P), D = cfg.hidden, I = cfg.intermediate;
  const int64_t rows = st.ffn_rows();
  ExpertExchange& x = st.ep;

  // Rows go out grouped by expert, so grouped by owner: send_rows[p] = rows of p's experts.
  x.send_rows.assign(P, 0);
  for (int p = 0; p < P; ++p) x.send_rows[p] = st.ffn_offset[(p + 1) * per] - st.ffn_offset[p * per];
  ensure_shape(x.buf_a, {rows, D});
  for (int64_t r = 0; r < rows; ++r)
    std::memcpy(x.buf_a.ptr() + r * D, st.x_in + static_cast<int64_t>(st.ffn_slot[r] / st.W) * D, sizeof(float) * D);

  // Every rank's per-expert counts: what each peer sends me, per expert of mine.
  const double t0 = now_s();
  std::vector<int64_t> mine(NF), all(static_cast<size_t>(P) * NF);
  for (int64_t e = 0; e < NF; ++e) mine[e] = st.ffn_offset[e + 1] - st.ffn_offset[e];
  group_.allgather(all.data(), mine.data(), NF);
  x.recv_rows.assign(P, 0);
  x.recv_offset.assign(P + 1, 0);
  for (int p = 0; p < P; ++p) {
    for (int64_t i = 0; i < per; ++i) x.recv_rows[p] += all[p * NF + me * per + i];
    x.recv_offset[p + 1] = x.recv_offset[p] + x.recv_rows[p];
  }
  const int64_t got = x.recv_offset[P];
  double comm = now_s() - t0;

  // Expert-major order of the received rows: expert i's rows from peer 0, then peer 1, ...
  x.local_offset.assign(per + 1, 0);
  x.perm.resize(got);
  int64_t r = 0;
  for (int64_t i = 0; i < per; ++i) {
    for (int p = 0; p < P; ++p) {
      int64_t start = x.recv_offset[p];
      for (int64_t j = 0; j < i; ++j) start += all[p * NF + me * per + j];
      const int64_t n = all[p * NF + me * per + i];
      for (int64_t k = 0; k < n; ++k) x.perm[r++] = start + k;
    }
    x.local_offset[i + 1] = r;
  }
  ensure_shape(x.x_local, {got, D});
  comm += to_owners(x.x_local.ptr(), x.buf_a.ptr(), x, group_, D);
  ensure_shape(x.h_local, {got, 2 * I});
  ensure_shape(x.a_local, {got, I});
  ensure_shape(x.buf_a, {got, D});  // the outputs, expert-major
  ffn_experts_forward(x.h_local.ptr(), x.a_local.ptr(), x.buf_a.ptr(), {x.x_local.ptr(), nullptr, 1},
                      x.local_offset.data(), params_, cfg, me * per, per);
  x.fwd_comm_s = comm + to_homes(o, x.buf_a.ptr(), x, group_, D);
  // Out: the rows to the owners and the outputs back to their senders; in: the same two, received.
  x.fwd_rows_out = remote_rows(x.send_rows, me) + remote_rows(x.recv_rows, me);
  x.fwd_rows_in = remote_rows(x.recv_rows, me) + remote_rows(x.send_rows, me);
}

void ExpertParallelFfn::backward(float* dx_rows, MoeBackwardScratch& sc, const float* do_rows,
                                 const MoeForwardState& st, const MoeConfig& cfg) {
  check(grads_ != nullptr, "ExpertParallelFfn: backward needs a gradient target");
  const int P = group_.size(), me = group_.rank();
  const int64_t per = experts_per_rank(cfg, P), D = cfg.hidden, I = cfg.intermediate;
  ExpertExchange& x = st.ep;  // the forward's record; its buffers are scratch (mutable)
  const int64_t got = x.recv_offset[P];

  ensure_shape(x.buf_a, {got, D});
  const double comm = to_owners(x.buf_a.ptr(), do_rows, x, group_, D);  // dO, expert-major
  ensure_shape(sc.ffn_dh, {got, 2 * I});
  ensure_shape(sc.ffn_x, {got, D});  // dX, expert-major
  ffn_experts_backward(sc.ffn_x.ptr(), *grads_, nullptr, sc.ffn_dh.ptr(), x.buf_a.ptr(), {x.x_local.ptr(), nullptr, 1},
                       x.h_local.ptr(), x.a_local.ptr(), x.local_offset.data(), params_, cfg, me * per, per);
  x.bwd_comm_s = comm + to_homes(dx_rows, sc.ffn_x.ptr(), x, group_, D);
  x.bwd_rows_out = remote_rows(x.send_rows, me) + remote_rows(x.recv_rows, me);
  x.bwd_rows_in = remote_rows(x.recv_rows, me) + remote_rows(x.send_rows, me);
}

}  // namespace moepp
