// Tiled causal attention, forward and backward (see attention.h). Tile products go through sgemm
// (single-threaded, called from inside our OpenMP regions); rows of a tile are query positions
// t0..t1-1, columns key positions k0..k1-1; key kk is visible to query t when kk <= t.
#include "model/attention.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "core/error.h"
#include "core/gemm.h"
#include "core/fast_exp.h"

namespace moepp {
namespace {

constexpr float kNegInf = -std::numeric_limits<float>::infinity();

// Number of visible keys of query t among keys k0..k0+n-1.
inline int64_t visible(int64_t t, int64_t k0, int64_t n) { return std::clamp<int64_t>(t - k0 + 1, 0, n); }

// P[m, n] = exp(scale * Q K^T - lse) on visible entries, 0 elsewhere (the softmax probabilities of
// the tile, recomputed from the saved logsumexp).
void recompute_probs(float* P, const float* Q, int64_t ldq, const float* K, int64_t ldk, const float* lse,
                     int64_t ld_lse, int64_t t0, int64_t m, int64_t k0, int64_t n, int64_t hd, float scale) {
  sgemm(false, true, m, n, hd, scale, Q, ldq, K, ldk, 0.0f, P, n);
  for (int64_t r = 0; r < m; ++r) {
    float* p = P + r * n;
    const int64_t nv = visible(t0 + r, k0, n);
    const float l = lse[r * ld_lse];
#pragma omp simd
    for (int64_t c = 0; c < nv; ++c) p[c] = exp_vec(p[c] - l);
    for (int64_t c = nv; c < n; ++c) p[c] = 0.0f;
  }
}

// dS[m, n] = P * (dO V^T - Dvec) in place of dP (buffer dS), P from recompute_probs.
void score_grad(float* dS, const float* P, const float* dO, int64_t ldq, const float* V, int64_t ldk,
                const float* Dvec, int64_t ld_d, int64_t m, int64_t n, int64_t hd) {
  sgemm(false, true, m, n, hd, 1.0f, dO, ldq, V, ldk, 0.0f, dS, n);
  for (int64_t r = 0; r < m; ++r) {
    const float d = Dvec[r * ld_d];
    for (int64_t c = 0; c < n; ++c) dS[r * n + c] = P[r * n + c] * (dS[r * n + c] - d);
  }
}

void check_shape(const AttnShape& s, const AttnBlocks& b) {
  check(s.B > 0 && s.T > 0 && s.H > 0 && s.KVH > 0 && s.hd > 0 && s.H % s.KVH == 0,
        "attention: bad shape (B, T, H, KVH, hd) = (" + std::to_string(s.B) + ", " + std::to_string(s.T) + ", " +
            std::to_string(s.H) + ", " + std::to_string(s.KVH) + ", " + std::to_string(s.hd) + ")");
  check(b.q > 0 && b.k > 0, "attention: block sizes must be > 0");
}

}  // namespace

void attention_forward(float* out, float* lse, const float* q, const float* k, const float* v, const AttnShape& s,
                       AttnBlocks blk) {
  check_shape(s, blk);
  const int64_t T = s.T, H = s.H, hd = s.hd, G = s.H / s.KVH;
  const int64_t ldq = H * hd, ldk = s.KVH * hd;
  const int64_t nqb = (T + blk.q - 1) / blk.q;
  const int64_t tasks = s.B * H * nqb;
  const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
#pragma omp parallel
  {
    std::vector<float> S(blk.q * blk.k), acc(blk.q * hd), m(blk.q), l(blk.q);
#pragma omp for schedule(dynamic, 1)
    for (int64_t task = 0; task < tasks; ++task) {
      // Longest (last) query blocks first: they have the most key blocks.
      const int64_t qb = nqb - 1 - task % nqb, h = (task / nqb) % H, b = task / (nqb * H);
      const int64_t t0 = qb * blk.q, t1 = std::min(T, t0 + blk.q), mq = t1 - t0;
      const float* Q = q + (b * T + t0) * ldq + h * hd;
      const float* Kb = k + b * T * ldk + (h / G) * hd;
      const float* Vb = v + b * T * ldk + (h / G) * hd;
      std::fill(m.begin(), m.begin() + mq, kNegInf);
      std::fill(l.begin(), l.begin() + mq, 0.0f);
      std::fill(acc.begin(), acc.begin() + mq * hd, 0.0f);
      for (int64_t k0 = 0; k0 < t1; k0 += blk.k) {
        const int64_t n = std::min(t1, k0 + blk.k) - k0;
        // S = scale * Q K^T   [mq, n]
        sgemm(false, true, mq, n, hd, scale, Q, ldq, Kb + k0 * ldk, ldk, 0.0f, S.data(), n);
        for (int64_t r = 0; r < mq; ++r) {
          float* sr = S.data() + r * n;
          const int64_t nv = visible(t0 + r, k0, n);
          if (nv == 0) {  // the whole tile row is masked
            std::fill(sr, sr + n, 0.0f);
            continue;
          }
          float mx = m[r];
#pragma omp simd reduction(max : mx)
          for (int64_t c = 0; c < nv; ++c) mx = sr[c] > mx ? sr[c] : mx;
          const float corr = std::exp(m[r] - mx);  // 0 on the first visible tile (m = -inf)
          float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
          for (int64_t c = 0; c < nv; ++c) {
            const float e = exp_vec(sr[c] - mx);
            sr[c] = e;
            sum += e;
          }
          for (int64_t c = nv; c < n; ++c) sr[c] = 0.0f;
          l[r] = l[r] * corr + sum;
          m[r] = mx;
          if (corr != 1.0f) {
            float* a = acc.data() + r * hd;
            for (int64_t d = 0; d < hd; ++d) a[d] *= corr;
          }
        }
        // acc += P V   [mq, hd]
        sgemm(false, false, mq, hd, n, 1.0f, S.data(), n, Vb + k0 * ldk, ldk, 1.0f, acc.data(), hd);
      }
      for (int64_t r = 0; r < mq; ++r) {
        float* o = out + (b * T + t0 + r) * ldq + h * hd;
        const float inv = 1.0f / l[r];
        for (int64_t d = 0; d < hd; ++d) o[d] = acc[r * hd + d] * inv;
        lse[(b * T + t0 + r) * H + h] = m[r] + std::log(l[r]);
      }
    }
  }
}

void attention_backward(float* dq, float* dk, float* dv, const float* dout, const float* q, const float* k,
                        const float* v, const float* out, const float* lse, const AttnShape& s, AttnBlocks blk,
                        AttnBackwardMode mode) {
  check_shape(s, blk);
  const int64_t B = s.B, T = s.T, H = s.H, KVH = s.KVH, hd = s.hd, G = H / KVH;
  const int64_t ldq = H * hd, ldk = KVH * hd;
  const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
  const int nt = omp_get_max_threads();
  if (mode == AttnBackwardMode::kAuto) {
    const int64_t tasks = B * KVH;
    mode = (tasks >= nt && (tasks % nt == 0 || tasks >= 4 * nt)) ? AttnBackwardMode::kKvOuter
                                                                   : AttnBackwardMode::kTwoPass;
  }

  // Dvec[t, h] = sum_d dout * out (the row term of the softmax backward).
  std::vector<float> Dvec(B * T * H);
#pragma omp parallel for schedule(static)
  for (int64_t n = 0; n < B * T; ++n)
    for (int64_t h = 0; h < H; ++h) {
      const float* a = dout + n * ldq + h * hd;
      const float* o = out + n * ldq + h * hd;
      float d = 0.0f;
      for (int64_t j = 0; j < hd; ++j) d += a[j] * o[j];
      Dvec[n * H + h] = d;
    }

  // dk, dv (and dq when dq_local) of key block [k0, k1) of kv head g in sequence b, over all query
  // heads of the group and all query blocks that see the block.
  auto kv_block = [&](int64_t b, int64_t g, int64_t k0, float* P, float* dS, float* dK, float* dV, bool with_dq) {
    const int64_t n = std::min(T, k0 + blk.k) - k0;
    const float* Kj = k + (b * T + k0) * ldk + g * hd;
    const float* Vj = v + (b * T + k0) * ldk + g * hd;
    std::fill(dK, dK + n * hd, 0.0f);
    std::fill(dV, dV + n * hd, 0.0f);
    for (int64_t h = g * G; h < (g + 1) * G; ++h) {
      for (int64_t t0 = (k0 / blk.q) * blk.q; t0 < T; t0 += blk.q) {
        const int64_t mq = std::min(T, t0 + blk.q) - t0;
        const int64_t row = b * T + t0;
        const float* Qi = q + row * ldq + h * hd;
        const float* dOi = dout + row * ldq + h * hd;
        recompute_probs(P, Qi, ldq, Kj, ldk, lse + row * H + h, H, t0, mq, k0, n, hd, scale);
        sgemm(true, false, n, hd, mq, 1.0f, P, n, dOi, ldq, 1.0f, dV, hd);  // dV += P^T dO
        score_grad(dS, P, dOi, ldq, Vj, ldk, Dvec.data() + row * H + h, H, mq, n, hd);
        sgemm(true, false, n, hd, mq, scale, dS, n, Qi, ldq, 1.0f, dK, hd);  // dK += scale dS^T Q
        if (with_dq)  // dQ += scale dS K
          sgemm(false, false, mq, hd, n, scale, dS, n, Kj, ldk, 1.0f, dq + row * ldq + h * hd, ldq);
      }
    }
    for (int64_t r = 0; r < n; ++r)
      for (int64_t d = 0; d < hd; ++d) {
        dk[(b * T + k0 + r) * ldk + g * hd + d] = dK[r * hd + d];
        dv[(b * T + k0 + r) * ldk + g * hd + d] = dV[r * hd + d];
      }
  };

  const int64_t nqb = (T + blk.q - 1) / blk.q, nkb = (T + blk.k - 1) / blk.k;
  if (mode == AttnBackwardMode::kKvOuter) {
#pragma omp parallel
    {
      std::vector<float> P(blk.q * blk.k), dS(blk.q * blk.k), dK(blk.k * hd), dV(blk.k * hd);
#pragma omp for schedule(dynamic, 1)
      for (int64_t task = 0; task < B * KVH; ++task) {
        const int64_t b = task / KVH, g = task % KVH;
        for (int64_t h = g * G; h < (g + 1) * G; ++h)
          for (int64_t t = 0; t < T; ++t) std::fill_n(dq + (b * T + t) * ldq + h * hd, hd, 0.0f);
        for (int64_t kb = 0; kb < nkb; ++kb)
          kv_block(b, g, kb * blk.k, P.data(), dS.data(), dK.data(), dV.data(), true);
      }
    }
    return;
  }

  // Two passes. Pass 1: dq, a task per (sequence, head, query block).
#pragma omp parallel
  {
    std::vector<float> P(blk.q * blk.k), dS(blk.q * blk.k);
#pragma omp for schedule(dynamic, 1)
    for (int64_t task = 0; task < B * H * nqb; ++task) {
      const int64_t qb = nqb - 1 - task % nqb, h = (task / nqb) % H, b = task / (nqb * H);
      const int64_t t0 = qb * blk.q, t1 = std::min(T, t0 + blk.q), mq = t1 - t0, row = b * T + t0;
      const float* Qi = q + row * ldq + h * hd;
      const float* dOi = dout + row * ldq + h * hd;
      float* dQi = dq + row * ldq + h * hd;
      for (int64_t r = 0; r < mq; ++r) std::fill_n(dQi + r * ldq, hd, 0.0f);
      for (int64_t k0 = 0; k0 < t1; k0 += blk.k) {
        const int64_t n = std::min(t1, k0 + blk.k) - k0;
        const float* Kj = k + (b * T + k0) * ldk + (h / G) * hd;
        const float* Vj = v + (b * T + k0) * ldk + (h / G) * hd;
        recompute_probs(P.data(), Qi, ldq, Kj, ldk, lse + row * H + h, H, t0, mq, k0, n, hd, scale);
        score_grad(dS.data(), P.data(), dOi, ldq, Vj, ldk, Dvec.data() + row * H + h, H, mq, n, hd);
        sgemm(false, false, mq, hd, n, scale, dS.data(), n, Kj, ldk, 1.0f, dQi, ldq);
      }
    }
  }
  // Pass 2: dk, dv, a task per (sequence, kv head, key block); early key blocks have the most work.
#pragma omp parallel
  {
    std::vector<float> P(blk.q * blk.k), dS(blk.q * blk.k), dK(blk.k * hd), dV(blk.k * hd);
#pragma omp for schedule(dynamic, 1)
    for (int64_t task = 0; task < B * KVH * nkb; ++task) {
      const int64_t kb = task % nkb, g = (task / nkb) % KVH, b = task / (nkb * KVH);
      kv_block(b, g, kb * blk.k, P.data(), dS.data(), dK.data(), dV.data(), false);
    }
  }
}

}  // namespace moepp
