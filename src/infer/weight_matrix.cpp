// WeightMatrix storage conversion and products (see weight_matrix.h). Two paths:
//   few rows (M <= kStreamRows): every thread takes a range of output rows and streams their stored
//     weights once through dot products against the M input rows, on 512-bit vectors where the build
//     has AVX-512 (else AVX2), weights prefetched ahead as core/stream_prefetch.h sets (decoding is
//     bound by the bytes of weights read, so BF16, INT8 and Q4 read 2x, 4x and 7x less than F32; Q4's
//     integer block kernels are core/q4_blocks.h's);
//   many rows: F32 weights go straight to sgemm_parallel. BF16, INT8 and Q4 weights, where oneDNN runs
//     native AVX-512 BF16 kernels, take a bf16 product (core/gemm.h; about 2x sgemm's FLOP/s): the input
//     rows are rounded to bf16; BF16 weights are used as stored (or as their packed copy, after
//     pack_for_many_rows()), INT8 codes are converted to bf16 exactly a chunk at a time with the row
//     scales applied to the products, Q4 weights are dequantised to bf16 a chunk at a time. Otherwise
//     every thread dequantises a block of kBlockRows weight rows into fp32 and runs sgemm on it.
#include "infer/weight_matrix.h"

// GCC 12 warns that the 512-bit intrinsics' own undefined-vector temporaries "may be used
// uninitialized" (GCC bug 105593, fixed in GCC 13); the warning is about the header, not this code.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

#include <immintrin.h>
#include <omp.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstring>

#include "core/error.h"
#include "core/fnv1a.h"
#include "core/gemm.h"
#include "core/half_float.h"
#include "core/q4_blocks.h"
#include "core/stream_prefetch.h"

namespace moepp {
namespace {

constexpr int64_t kStreamRows = 8;   // up to this many input rows: streaming dot products
constexpr int64_t kBlockRows = 64;   // weight rows dequantised per sgemm block
// Weight rows made bf16 per bf16 product of many rows: Q4's dequantisation is compute and its chunk
// stays in the L2 cache; INT8's conversion is cheap, so fewer, larger GEMM calls win (the INT8 MoE++
// prefill's experts took 185 instead of 219 ms with 1024 rows against 256; Q4's did not gain).
constexpr int64_t kBf16ChunkRowsQ4 = 256, kBf16ChunkRowsInt8 = 1024;

#ifdef __AVX2__
inline float hsum(__m256 v) {
  __m128 lo = _mm256_castps256_ps128(v), hi = _mm256_extractf128_ps(v, 1);
  lo = _mm_add_ps(lo, hi);
  lo = _mm_add_ps(lo, _mm_movehl_ps(lo, lo));
  lo = _mm_add_ss(lo, _mm_shuffle_ps(lo, lo, 1));
  return _mm_cvtss_f32(lo);
}
inline __m256 load8(const float* p) { return _mm256_loadu_ps(p); }
inline __m256 load8(const uint16_t* p) {
  const __m256i w = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  return _mm256_castsi256_ps(_mm256_slli_epi32(w, 16));
}
inline __m256 load8(const int8_t* p) {
  const __m256i w = _mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p)));
  return _mm256_cvtepi32_ps(w);
}
#endif
#ifdef __AVX512F__
// Sixteen weights widened to fp32 in one 512-bit vector (same values as load8, twice the width).
// fp32 weights are read as two 256-bit halves: on the AMD EPYC of family 26 (Zen 5) the one-row
// products then streamed 1.16x (1.05-1.37) the bytes per second of 512-bit loads, 40.5 against 36.3
// GB/s (5 interleaved rounds of `bench kernels`, bench/results/kernels_f32_load_width_epyc_zen5.jsonl).
// The lanes, and so the sums, are the same as one 512-bit load's. (The halves are joined as 64-bit
// lanes: insertf32x8 would need AVX512DQ, which this #ifdef does not promise.)
inline __m512 load16(const float* p) {
  const __m512d lo = _mm512_castpd256_pd512(_mm256_castps_pd(_mm256_loadu_ps(p)));
  return _mm512_castpd_ps(_mm512_insertf64x4(lo, _mm256_castps_pd(_mm256_loadu_ps(p + 8)), 1));
}
inline __m512 load16(const uint16_t* p) {
  const __m512i w = _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
  return _mm512_castsi512_ps(_mm512_slli_epi32(w, 16));
}
inline __m512 load16(const int8_t* p) {
  return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))));
}
#endif
inline float to_f32(float v) { return v; }
inline float to_f32(uint16_t v) { return bf16_to_f32(v); }
inline float to_f32(int8_t v) { return static_cast<float>(v); }

// out[o] (+)= scale(o) * <x, W[o]> for o in [o0, o1): one input row (decoding). Four independent
// accumulators keep the FMA units busy (one accumulator would wait on the FMA latency every step).
// Weights are prefetched `pf` bytes ahead into level L (core/stream_prefetch.h).
template <PrefetchLevel L, typename Wt>
void stream_one_row(float* out, const float* x, const Wt* W, const float* scale, int64_t I, int64_t o0, int64_t o1,
                    bool accumulate, [[maybe_unused]] int64_t pf) {
  for (int64_t o = o0; o < o1; ++o) {
    const Wt* w = W + o * I;
    float acc = 0.0f;
    int64_t j = 0;
#ifdef __AVX512F__
    __m512 b0 = _mm512_setzero_ps(), b1 = _mm512_setzero_ps(), b2 = _mm512_setzero_ps(), b3 = _mm512_setzero_ps();
    for (; j + 64 <= I; j += 64) {
      // 64 weights are sizeof(Wt) cache lines: each is prefetched pf bytes ahead of its use.
      const char* ahead = reinterpret_cast<const char*>(w + j) + pf;
      for (size_t l = 0; l < sizeof(Wt); ++l) prefetch_line<L>(ahead + 64 * l);
      b0 = _mm512_fmadd_ps(load16(w + j), _mm512_loadu_ps(x + j), b0);
      b1 = _mm512_fmadd_ps(load16(w + j + 16), _mm512_loadu_ps(x + j + 16), b1);
      b2 = _mm512_fmadd_ps(load16(w + j + 32), _mm512_loadu_ps(x + j + 32), b2);
      b3 = _mm512_fmadd_ps(load16(w + j + 48), _mm512_loadu_ps(x + j + 48), b3);
    }
    for (; j + 16 <= I; j += 16) b0 = _mm512_fmadd_ps(load16(w + j), _mm512_loadu_ps(x + j), b0);
    acc = _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(b0, b1), _mm512_add_ps(b2, b3)));
#endif
#ifdef __AVX2__
    __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps(), a2 = _mm256_setzero_ps(), a3 = _mm256_setzero_ps();
    for (; j + 32 <= I; j += 32) {
      constexpr int64_t kStepBytes = 32 * static_cast<int64_t>(sizeof(Wt));  // half a line for INT8
      if (kStepBytes >= 64 || (j * static_cast<int64_t>(sizeof(Wt))) % 64 == 0)
        for (int64_t b = 0; b < kStepBytes; b += 64) prefetch_line<L>(reinterpret_cast<const char*>(w + j) + pf + b);
      a0 = _mm256_fmadd_ps(load8(w + j), _mm256_loadu_ps(x + j), a0);
      a1 = _mm256_fmadd_ps(load8(w + j + 8), _mm256_loadu_ps(x + j + 8), a1);
      a2 = _mm256_fmadd_ps(load8(w + j + 16), _mm256_loadu_ps(x + j + 16), a2);
      a3 = _mm256_fmadd_ps(load8(w + j + 24), _mm256_loadu_ps(x + j + 24), a3);
    }
    for (; j + 8 <= I; j += 8) a0 = _mm256_fmadd_ps(load8(w + j), _mm256_loadu_ps(x + j), a0);
    acc += hsum(_mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)));
#endif
    for (; j < I; ++j) acc += to_f32(w[j]) * x[j];
    const float v = (scale ? scale[o] : 1.0f) * acc;
    out[o] = accumulate ? out[o] + v : v;
  }
}

// out[m * ldo + o] (+)= scale(o) * <x[m], W[o]> for o in [o0, o1), m in [0, M), up to 4 input rows at a
// time so that each loaded weight vector feeds 4 FMAs; weights prefetched as in stream_one_row.
template <PrefetchLevel L, typename Wt>
void stream_rows(float* out, int64_t ldo, const float* x, int64_t M, const Wt* W, const float* scale, int64_t I,
                 int64_t o0, int64_t o1, bool accumulate, int64_t pf) {
  if (M == 1) {
    stream_one_row<L>(out, x, W, scale, I, o0, o1, accumulate, pf);
    return;
  }
  for (int64_t m0 = 0; m0 < M; m0 += 4) {
    const int64_t mb = std::min<int64_t>(4, M - m0);
    const float* xr[4];
    for (int64_t i = 0; i < 4; ++i) xr[i] = x + (m0 + std::min(i, mb - 1)) * I;
    for (int64_t o = o0; o < o1; ++o) {
      const Wt* w = W + o * I;
      float acc[4] = {0, 0, 0, 0};
      int64_t j = 0;
#ifdef __AVX512F__
      __m512 b0 = _mm512_setzero_ps(), b1 = _mm512_setzero_ps(), b2 = _mm512_setzero_ps(), b3 = _mm512_setzero_ps();
      for (; j + 16 <= I; j += 16) {
        if ((j * static_cast<int64_t>(sizeof(Wt))) % 64 == 0) prefetch_line<L>(reinterpret_cast<const char*>(w + j) + pf);
        const __m512 wv = load16(w + j);
        b0 = _mm512_fmadd_ps(wv, _mm512_loadu_ps(xr[0] + j), b0);
        if (mb > 1) b1 = _mm512_fmadd_ps(wv, _mm512_loadu_ps(xr[1] + j), b1);
        if (mb > 2) b2 = _mm512_fmadd_ps(wv, _mm512_loadu_ps(xr[2] + j), b2);
        if (mb > 3) b3 = _mm512_fmadd_ps(wv, _mm512_loadu_ps(xr[3] + j), b3);
      }
      acc[0] = _mm512_reduce_add_ps(b0);
      acc[1] = _mm512_reduce_add_ps(b1);
      acc[2] = _mm512_reduce_add_ps(b2);
      acc[3] = _mm512_reduce_add_ps(b3);
#endif
#ifdef __AVX2__
      __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps(), a2 = _mm256_setzero_ps(), a3 = _mm256_setzero_ps();
      for (; j + 8 <= I; j += 8) {
        if ((j * static_cast<int64_t>(sizeof(Wt))) % 64 == 0) prefetch_line<L>(reinterpret_cast<const char*>(w + j) + pf);
        const __m256 wv = load8(w + j);
        a0 = _mm256_fmadd_ps(wv, _mm256_loadu_ps(xr[0] + j), a0);
        if (mb > 1) a1 = _mm256_fmadd_ps(wv, _mm256_loadu_ps(xr[1] + j), a1);
        if (mb > 2) a2 = _mm256_fmadd_ps(wv, _mm256_loadu_ps(xr[2] + j), a2);
        if (mb > 3) a3 = _mm256_fmadd_ps(wv, _mm256_loadu_ps(xr[3] + j), a3);
      }
      acc[0] += hsum(a0);
      acc[1] += hsum(a1);
      acc[2] += hsum(a2);
      acc[3] += hsum(a3);
#endif
      for (; j < I; ++j) {
        const float wv = to_f32(w[j]);
        for (int64_t i = 0; i < mb; ++i) acc[i] += wv * xr[i][j];
      }
      const float s = scale ? scale[o] : 1.0f;
      for (int64_t i = 0; i < mb; ++i) {
        float& dst = out[(m0 + i) * ldo + o];
        dst = accumulate ? dst + s * acc[i] : s * acc[i];
      }
    }
  }
}

// Rows [o0, o0 + n) of W dequantised into out [n, I] (vectorised widening; INT8 times the row scale).
template <typename Wt>
void dequant_rows(float* out, const Wt* W, const float* scale, int64_t I, int64_t o0, int64_t n) {
  for (int64_t r = 0; r < n; ++r) {
    const Wt* w = W + (o0 + r) * I;
    float* d = out + r * I;
    int64_t j = 0;
#ifdef __AVX2__
    if (scale) {
      const __m256 s = _mm256_set1_ps(scale[o0 + r]);
      for (; j + 8 <= I; j += 8) _mm256_storeu_ps(d + j, _mm256_mul_ps(s, load8(w + j)));
    } else {
      for (; j + 8 <= I; j += 8) _mm256_storeu_ps(d + j, load8(w + j));
    }
#endif
    for (; j < I; ++j) d[j] = (scale ? scale[o0 + r] : 1.0f) * to_f32(w[j]);
  }
}

}  // namespace

const char* weight_dtype_name(WeightDType d) {
  switch (d) {
    case WeightDType::kF32: return "f32";
    case WeightDType::kBF16: return "bf16";
    case WeightDType::kInt8: return "int8";
    case WeightDType::kQ4: return "q4";
  }
  return "?";
}

WeightDType parse_weight_dtype(const std::string& s) {
  if (s == "f32") return WeightDType::kF32;
  if (s == "bf16") return WeightDType::kBF16;
  if (s == "int8") return WeightDType::kInt8;
  if (s == "q4") return WeightDType::kQ4;
  throw Error("unknown weight dtype '" + s + "' (expected f32, bf16, int8 or q4)");
}

WeightMatrix WeightMatrix::from_f32(const float* w, int64_t O, int64_t I, WeightDType d) {
  check(O > 0 && I > 0, "WeightMatrix: empty matrix");
  WeightMatrix m;
  m.dtype_ = d;
  m.O_ = O;
  m.I_ = I;
  const size_t n = static_cast<size_t>(O * I);
  switch (d) {
    case WeightDType::kF32:
      m.f32_.assign(w, w + n);
      break;
    case WeightDType::kBF16:
      m.bf16_.resize(n);
#pragma omp parallel for schedule(static)
      for (int64_t i = 0; i < static_cast<int64_t>(n); ++i) m.bf16_[i] = f32_to_bf16(w[i]);
      break;
    case WeightDType::kInt8:
      m.i8_.resize(n);
      m.scale_.resize(O);
#pragma omp parallel for schedule(static)
      for (int64_t o = 0; o < O; ++o) {
        const float* r = w + o * I;
        float amax = 0.0f;
        for (int64_t j = 0; j < I; ++j) amax = std::max(amax, std::fabs(r[j]));
        const float s = amax > 0.0f ? amax / 127.0f : 1.0f;
        m.scale_[o] = s;
        const float inv = 1.0f / s;
        for (int64_t j = 0; j < I; ++j)
          m.i8_[o * I + j] = static_cast<int8_t>(std::clamp(std::nearbyint(r[j] * inv), -127.0f, 127.0f));
      }
      break;
    case WeightDType::kQ4: {
      const int64_t nb = q4_blocks(I);
      m.q4_codes_.resize(static_cast<size_t>(O * nb * 16));
      m.q4_scales_.resize(static_cast<size_t>(O * nb));
#pragma omp parallel for schedule(static)
      for (int64_t o = 0; o < O; ++o) q4_quantize_row(&m.q4_codes_[o * nb * 16], &m.q4_scales_[o * nb], w + o * I, I);
      break;
    }
  }
  return m;
}

WeightMatrix WeightMatrix::view(WeightDType d, const void* data, const void* scales, int64_t O, int64_t I,
                                 std::shared_ptr<const void> owner) {
  check(O > 0 && I > 0, "WeightMatrix: empty matrix");
  check(d != WeightDType::kF32, "WeightMatrix::view: F32 matrices are copied, not viewed");
  auto aligned = [](const void* p, size_t a) { return p != nullptr && reinterpret_cast<uintptr_t>(p) % a == 0; };
  check(aligned(data, d == WeightDType::kBF16 ? 2 : 1), "WeightMatrix::view: the data must be non-null and aligned");
  if (d == WeightDType::kInt8 || d == WeightDType::kQ4)
    check(aligned(scales, d == WeightDType::kInt8 ? 4 : 2), "WeightMatrix::view: the scales must be non-null and aligned");
  WeightMatrix m;
  m.dtype_ = d;
  m.O_ = O;
  m.I_ = I;
  m.view_data_ = data;
  m.view_scales_ = d == WeightDType::kBF16 ? nullptr : scales;
  m.owner_ = std::move(owner);
  return m;
}

WeightMatrix::Stored WeightMatrix::stored() const {
  const size_t n = static_cast<size_t>(O_ * I_);
  switch (dtype_) {
    case WeightDType::kF32: return {f32_.data(), n * 4, nullptr, 0};
    case WeightDType::kBF16: return {bf16(), n * 2, nullptr, 0};
    case WeightDType::kInt8: return {i8(), n, row_scales(), static_cast<size_t>(O_) * 4};
    case WeightDType::kQ4: {
      const size_t nb = static_cast<size_t>(O_ * q4_blocks(I_));
      return {q4_codes(), nb * 16, q4_scales(), nb * 2};
    }
  }
  return {nullptr, 0, nullptr, 0};
}

WeightMatrix WeightMatrix::owned_copy() const {
  WeightMatrix m;
  m.dtype_ = dtype_;
  m.O_ = O_;
  m.I_ = I_;
  const Stored st = stored();
  const auto* d = static_cast<const uint8_t*>(st.data);
  const auto* s = static_cast<const uint8_t*>(st.scales);
  auto copy = [](auto& vec, const uint8_t* p, size_t bytes) {
    vec.resize(bytes / sizeof(vec[0]));
    if (bytes) std::memcpy(vec.data(), p, bytes);
  };
  switch (dtype_) {
    case WeightDType::kF32: copy(m.f32_, d, st.data_bytes); break;
    case WeightDType::kBF16: copy(m.bf16_, d, st.data_bytes); break;
    case WeightDType::kInt8:
      copy(m.i8_, d, st.data_bytes);
      copy(m.scale_, s, st.scale_bytes);
      break;
    case WeightDType::kQ4:
      copy(m.q4_codes_, d, st.data_bytes);
      copy(m.q4_scales_, s, st.scale_bytes);
      break;
  }
  m.packed_ = packed_;
  return m;
}

size_t WeightMatrix::bytes() const {
  return f32_.size() * 4 + bf16_.size() * 2 + i8_.size() + scale_.size() * 4 + q4_codes_.size() +
         q4_scales_.size() * 2 + packed_bytes();
}

size_t WeightMatrix::mapped_bytes() const {
  if (view_data_ == nullptr) return 0;
  const Stored st = stored();
  return st.data_bytes + st.scale_bytes;
}

void WeightMatrix::row_f32(int64_t r, float* out) const {
  const size_t off = static_cast<size_t>(r * I_);
  switch (dtype_) {
    case WeightDType::kF32: std::memcpy(out, f32_.data() + off, sizeof(float) * I_); break;
    case WeightDType::kBF16:
      for (int64_t j = 0; j < I_; ++j) out[j] = bf16_to_f32(bf16()[off + j]);
      break;
    case WeightDType::kInt8:
      for (int64_t j = 0; j < I_; ++j) out[j] = row_scales()[r] * static_cast<float>(i8()[off + j]);
      break;
    case WeightDType::kQ4: {
      const int64_t nb = q4_blocks(I_);
      q4_dequantize_row(out, q4_codes() + r * nb * 16, q4_scales() + r * nb, I_);
      break;
    }
  }
}

void WeightMatrix::matmul(float* out, const float* x, int64_t M, bool accumulate) const {
  check(O_ > 0, "WeightMatrix::matmul: empty matrix");
  if (M <= 0) return;
  if (M <= kStreamRows) {
    // Q4 takes the input rows as Q8 blocks, made once here for every thread.
    const int64_t nb = dtype_ == WeightDType::kQ4 ? q4_blocks(I_) : 0;
    thread_local std::vector<int8_t> xq;
    thread_local std::vector<float> xd;
    thread_local std::vector<int32_t> xsum;
    if (dtype_ == WeightDType::kQ4) {
      xq.resize(static_cast<size_t>(M * nb * kQ4Block));
      xd.resize(static_cast<size_t>(M * nb));
      xsum.resize(static_cast<size_t>(M * nb));
      for (int64_t m = 0; m < M; ++m)
        q8_quantize_row(&xq[m * nb * kQ4Block], &xd[m * nb], &xsum[m * nb], x + m * I_, I_);
    }
    const int8_t* q = xq.data();
    const float* d = xd.data();
    const int32_t* sum = xsum.data();
    const StreamPrefetch pf = stream_prefetch();
    // Output rows split evenly over threads (in multiples of 8 so neighbours do not share cache lines).
#pragma omp parallel
    {
      const int64_t nt = omp_get_num_threads(), t = omp_get_thread_num();
      const int64_t per = ((O_ + nt - 1) / nt + 7) / 8 * 8;
      const int64_t o0 = std::min(O_, t * per), o1 = std::min(O_, o0 + per);
      if (o0 < o1) {
        with_prefetch_level(pf.level, [&](auto level) {
          constexpr PrefetchLevel L = decltype(level)::value;
          switch (dtype_) {
            case WeightDType::kF32: stream_rows<L>(out, O_, x, M, f32_.data(), nullptr, I_, o0, o1, accumulate, pf.bytes); break;
            case WeightDType::kBF16: stream_rows<L>(out, O_, x, M, bf16(), nullptr, I_, o0, o1, accumulate, pf.bytes); break;
            case WeightDType::kInt8: stream_rows<L>(out, O_, x, M, i8(), row_scales(), I_, o0, o1, accumulate, pf.bytes); break;
            case WeightDType::kQ4:
              q4_dot_rows(out, O_, q4_codes(), q4_scales(), q, d, sum, M, nb, o0, o1, accumulate);
              break;
          }
        });
      }
    }
    return;
  }
  if (dtype_ != WeightDType::kF32 && gemm_bf16_native()) {
    matmul_bf16(out, x, M, accumulate);
    return;
  }
  const float beta = accumulate ? 1.0f : 0.0f;
  if (dtype_ == WeightDType::kF32) {
    sgemm_parallel(false, true, M, O_, I_, 1.0f, x, I_, f32_.data(), I_, beta, out, O_);
    return;
  }
  const int64_t nblocks = (O_ + kBlockRows - 1) / kBlockRows;
#pragma omp parallel
  {
    std::vector<float> wbuf(static_cast<size_t>(kBlockRows * I_));
#pragma omp for schedule(dynamic, 1)
    for (int64_t b = 0; b < nblocks; ++b) {
      const int64_t o0 = b * kBlockRows, nb = std::min(kBlockRows, O_ - o0);
      if (dtype_ == WeightDType::kBF16) dequant_rows(wbuf.data(), bf16(), nullptr, I_, o0, nb);
      else if (dtype_ == WeightDType::kInt8) dequant_rows(wbuf.data(), i8(), row_scales(), I_, o0, nb);
      else
        for (int64_t r = 0; r < nb; ++r) row_f32(o0 + r, wbuf.data() + r * I_);
      sgemm(false, true, M, nb, I_, 1.0f, x, I_, wbuf.data(), I_, beta, out + o0, O_);
    }
  }
}

void WeightMatrix::matmul_bf16(float* out, const float* x, int64_t M, bool accumulate) const {
  thread_local std::vector<uint16_t> xb;  // the input rows in bf16
  xb.resize(static_cast<size_t>(M * I_));
  uint16_t* xp = xb.data();
  const int64_t n = M * I_;
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; ++i) xp[i] = f32_to_bf16(x[i]);
  if (dtype_ == WeightDType::kBF16) {
    if (packed_)
      packed_->multiply(out, xp, M, O_, accumulate);
    else
      gemm_bf16_parallel(M, O_, I_, xp, bf16(), out, O_, accumulate);
    return;
  }
  // Q4 and INT8: chunks of weight rows made bf16 (kBf16ChunkRows*), each
  // multiplied as it is made. Q4: the dequantised weights, (q - 8) * d, rounded to bf16 (2^-9 of each).
  // INT8: the codes themselves, exact in bf16 (|q| <= 127 needs 7 bits), multiplied into a chunk of
  // fp32 products that each output column's row scale then multiplies: the weights stay exact.
  thread_local std::vector<uint16_t> wb;
  thread_local std::vector<float> prod;  // INT8: [M, chunk rows] products before the row scales
  const bool int8 = dtype_ == WeightDType::kInt8;
  const int64_t chunk = std::min(int8 ? kBf16ChunkRowsInt8 : kBf16ChunkRowsQ4, O_);
  wb.resize(static_cast<size_t>(chunk * I_));
  uint16_t* wp = wb.data();
  if (int8) prod.resize(static_cast<size_t>(M * chunk));
  for (int64_t o0 = 0; o0 < O_; o0 += chunk) {
    const int64_t rows = std::min(chunk, O_ - o0);
    const int64_t nb = q4_blocks(I_);
    const int8_t* codes = int8 ? i8() + o0 * I_ : nullptr;
#pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < rows; ++r) {
      if (int8) {
        // Exact: an integer of magnitude <= 127 is its fp32 bits' upper half (inline, so it vectorises).
        for (int64_t j = 0; j < I_; ++j)
          wp[r * I_ + j] = static_cast<uint16_t>(std::bit_cast<uint32_t>(static_cast<float>(codes[r * I_ + j])) >> 16);
      } else {
        q4_dequantize_row_bf16(wp + r * I_, q4_codes() + (o0 + r) * nb * 16, q4_scales() + (o0 + r) * nb, I_);
      }
    }
    if (!int8) {
      gemm_bf16_parallel(M, rows, I_, xp, wp, out + o0, O_, accumulate);
      continue;
    }
    gemm_bf16_parallel(M, rows, I_, xp, wp, prod.data(), rows, false);
    const float* sc = row_scales() + o0;
    const float* pp = prod.data();
#pragma omp parallel for schedule(static)
    for (int64_t m = 0; m < M; ++m) {
      float* o = out + m * O_ + o0;
      const float* p = pp + m * rows;
      if (accumulate) {
        for (int64_t r = 0; r < rows; ++r) o[r] += sc[r] * p[r];
      } else {
        for (int64_t r = 0; r < rows; ++r) o[r] = sc[r] * p[r];
      }
    }
  }
}

size_t WeightMatrix::pack_for_many_rows() {
  if (dtype_ != WeightDType::kBF16 || packed_ || O_ == 0 || I_ == 0) return 0;
  packed_ = Bf16PackedWeights::pack(bf16(), O_, I_);
  return packed_bytes();
}

size_t WeightMatrix::packed_bytes() const { return packed_ ? packed_->bytes() : 0; }

void WeightMatrix::add_to_hash(Fnv1a64& h) const {
  const int64_t head[3] = {static_cast<int64_t>(dtype_), O_, I_};
  h.add(head, sizeof head);
  const Stored st = stored();
  h.add(st.data, st.data_bytes);
  if (st.scale_bytes) h.add(st.scales, st.scale_bytes);
}

}  // namespace moepp
