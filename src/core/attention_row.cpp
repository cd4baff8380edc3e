// The fused one-row attention kernel and the causal softmax row (see attention_row.h).
// GCC 12 reports -Wmaybe-uninitialized inside its own AVX-512 intrinsics (their undefined pass-through
// operand); the warning is about the compiler's header, not this file.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include "core/attention_row.h"

#include <algorithm>
#include <bit>
#include <limits>

#include "core/fast_exp.h"

#ifdef __AVX512F__
#include <immintrin.h>
#endif

namespace moepp {
namespace {

inline float widen(float x) { return x; }
inline float widen(uint16_t h) { return std::bit_cast<float>(static_cast<uint32_t>(h) << 16); }  // exact

#ifdef __AVX512F__
constexpr int64_t kPrefetchRows = 16;  // weighted_sum: value rows prefetched this far ahead

inline __m512 load16(const float* p) { return _mm512_loadu_ps(p); }
inline __m512 load16(const uint16_t* p) {
  const __m256i h = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}

// The 16 lane-sums of acc[0..15] as one vector (lane u = sum of acc[u]'s lanes): a transpose by
// unpack and shuffle steps, 15 adds in all instead of 16 horizontal reductions.
inline __m512 sum_lanes16(const __m512* acc) {
  __m512 r8[8], r4[4], r2[2];
  for (int u = 0; u < 8; ++u) {
    const __m512 a = acc[2 * u], b = acc[2 * u + 1];
    r8[u] = _mm512_add_ps(_mm512_unpacklo_ps(a, b), _mm512_unpackhi_ps(a, b));
  }
  for (int u = 0; u < 4; ++u) {
    const __m512d a = _mm512_castps_pd(r8[2 * u]), b = _mm512_castps_pd(r8[2 * u + 1]);
    r4[u] = _mm512_add_ps(_mm512_castpd_ps(_mm512_unpacklo_pd(a, b)), _mm512_castpd_ps(_mm512_unpackhi_pd(a, b)));
  }
  // r4[u]: in each 128-bit block, partial sums of keys 4u .. 4u + 3; add the four blocks.
  for (int u = 0; u < 2; ++u) {
    const __m512 a = r4[2 * u], b = r4[2 * u + 1];
    r2[u] = _mm512_add_ps(_mm512_shuffle_f32x4(a, b, 0x88), _mm512_shuffle_f32x4(a, b, 0xDD));
  }
  return _mm512_add_ps(_mm512_shuffle_f32x4(r2[0], r2[1], 0x88), _mm512_shuffle_f32x4(r2[0], r2[1], 0xDD));
}
#endif

template <class T>
void scores(float* s, const float* q, const T* k, int64_t n, int64_t hd, float scale) {
  int64_t j = 0;
#ifdef __AVX512F__
  if (hd % 16 == 0) {
    const __m512 sc = _mm512_set1_ps(scale);
    for (; j + 16 <= n; j += 16) {
      __m512 acc[16];
      for (int u = 0; u < 16; ++u) acc[u] = _mm512_setzero_ps();
      // The next 16 keys' rows, from memory while these are summed (the head's rows are contiguous).
      const char* ahead = reinterpret_cast<const char*>(k + (j + 16) * hd);
      for (int64_t b = 0; b < 16 * hd * static_cast<int64_t>(sizeof(T)); b += 64) _mm_prefetch(ahead + b, _MM_HINT_T0);
      for (int64_t d = 0; d < hd; d += 16) {
        const __m512 qv = _mm512_loadu_ps(q + d);
        for (int u = 0; u < 16; ++u) acc[u] = _mm512_fmadd_ps(qv, load16(k + (j + u) * hd + d), acc[u]);
      }
      _mm512_storeu_ps(s + j, _mm512_mul_ps(sum_lanes16(acc), sc));
    }
  }
#endif
  for (; j < n; ++j) {
    const T* kj = k + j * hd;
    float acc = 0.0f;
#pragma omp simd reduction(+ : acc)
    for (int64_t d = 0; d < hd; ++d) acc += q[d] * widen(kj[d]);
    s[j] = acc * scale;
  }
}

template <class T>
void weighted_sum(float* out, const float* s, const T* v, int64_t n, int64_t hd) {
  int64_t d0 = 0;
#ifdef __AVX512F__
  // 64 output columns at a time, held in registers over all n rows.
  for (; d0 + 64 <= hd; d0 += 64) {
    __m512 o0 = _mm512_setzero_ps(), o1 = o0, o2 = o0, o3 = o0;
    for (int64_t j = 0; j < n; ++j) {
      const __m512 p = _mm512_set1_ps(s[j]);
      const T* vj = v + j * hd + d0;
      _mm_prefetch(reinterpret_cast<const char*>(vj + kPrefetchRows * hd), _MM_HINT_T0);
      if (sizeof(T) == sizeof(float)) _mm_prefetch(reinterpret_cast<const char*>(vj + kPrefetchRows * hd) + 64, _MM_HINT_T0);
      o0 = _mm512_fmadd_ps(p, load16(vj), o0);
      o1 = _mm512_fmadd_ps(p, load16(vj + 16), o1);
      o2 = _mm512_fmadd_ps(p, load16(vj + 32), o2);
      o3 = _mm512_fmadd_ps(p, load16(vj + 48), o3);
    }
    _mm512_storeu_ps(out + d0, o0);
    _mm512_storeu_ps(out + d0 + 16, o1);
    _mm512_storeu_ps(out + d0 + 32, o2);
    _mm512_storeu_ps(out + d0 + 48, o3);
  }
#endif
  for (int64_t d = d0; d < hd; ++d) out[d] = 0.0f;
  for (int64_t j = 0; j < n; ++j) {
    const T* vj = v + j * hd;
    const float p = s[j];
#pragma omp simd
    for (int64_t d = d0; d < hd; ++d) out[d] += p * widen(vj[d]);
  }
}

template <class T>
void attention_row(float* out, float* s, const float* q, const T* k, const T* v, int64_t n, int64_t hd, float scale) {
  scores(s, q, k, n, hd, scale);
  causal_softmax_row(s, n, n);
  weighted_sum(out, s, v, n, hd);
}

}  // namespace

// The reductions are vectorised (omp simd: lane-wise partial sums, a fixed order for a given build).
void causal_softmax_row(float* row, int64_t valid, int64_t n) {
  float mx = -std::numeric_limits<float>::infinity();
#pragma omp simd reduction(max : mx)
  for (int64_t j = 0; j < valid; ++j) mx = std::max(mx, row[j]);
  float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
  for (int64_t j = 0; j < valid; ++j) {
    row[j] = exp_vec(row[j] - mx);
    sum += row[j];
  }
  const float inv = 1.0f / sum;
  for (int64_t j = 0; j < valid; ++j) row[j] *= inv;
  for (int64_t j = valid; j < n; ++j) row[j] = 0.0f;
}

void attention_row_f32(float* out, float* s, const float* q, const float* k, const float* v, int64_t n, int64_t hd,
                       float scale) {
  attention_row(out, s, q, k, v, n, hd, scale);
}

void attention_row_bf16(float* out, float* s, const float* q, const uint16_t* k, const uint16_t* v, int64_t n,
                        int64_t hd, float scale) {
  attention_row(out, s, q, k, v, n, hd, scale);
}

}  // namespace moepp
