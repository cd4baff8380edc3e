// Q4 block quantisation and the q4 x q8 dot-product kernels (see q4_blocks.h). Each kernel is compiled
// for its instruction set with a target attribute, so one binary carries all three and picks at run
// time; the build's -march does not decide.
// GCC 12 reports -Wmaybe-uninitialized inside its own AVX-512 intrinsics (their undefined pass-through
// operands; GCC bug 105593, fixed in GCC 13): silenced for this file only.
#if defined(__GNUC__) && !defined(__clang__) && __GNUC__ < 13
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include "core/q4_blocks.h"

#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "core/error.h"
#include "core/half_float.h"
#include "core/stream_prefetch.h"

namespace moepp {

void q4_quantize_row(uint8_t* codes, uint16_t* scales, const float* w, int64_t I) {
  const int64_t nb = q4_blocks(I);
  for (int64_t b = 0; b < nb; ++b) {
    const int64_t j0 = b * kQ4Block, n = std::min(kQ4Block, I - j0);
    float wmax = 0.0f;  // the weight of largest magnitude, with its sign
    for (int64_t j = 0; j < n; ++j)
      if (std::fabs(w[j0 + j]) > std::fabs(wmax)) wmax = w[j0 + j];
    scales[b] = f32_to_f16(wmax / -8.0f);
    const float d = f16_to_f32(scales[b]);  // quantise against the scale as stored
    const float inv = d != 0.0f ? 1.0f / d : 0.0f;
    uint8_t* c = codes + b * 16;
    std::memset(c, 0x88, 16);  // padding: code 8 = 0
    for (int64_t j = 0; j < n; ++j) {
      const int q = static_cast<int>(std::clamp(std::nearbyint(w[j0 + j] * inv) + 8.0f, 0.0f, 15.0f));
      uint8_t& byte = c[j % 16];
      byte = j < 16 ? static_cast<uint8_t>((byte & 0xF0) | q) : static_cast<uint8_t>((byte & 0x0F) | (q << 4));
    }
  }
}

void q4_dequantize_row(float* out, const uint8_t* codes, const uint16_t* scales, int64_t I) {
  const int64_t nb = q4_blocks(I);
  for (int64_t b = 0; b < nb; ++b) {
    const float d = f16_to_f32(scales[b]);
    const uint8_t* c = codes + b * 16;
    const int64_t j0 = b * kQ4Block, n = std::min(kQ4Block, I - j0);
    if (n == kQ4Block) {  // two plain loops the compiler vectorises (prefill dequantises every weight)
      for (int j = 0; j < 16; ++j) out[j0 + j] = static_cast<float>((c[j] & 0x0F) - 8) * d;
      for (int j = 0; j < 16; ++j) out[j0 + 16 + j] = static_cast<float>((c[j] >> 4) - 8) * d;
      continue;
    }
    for (int64_t j = 0; j < n; ++j) {
      const int q = j < 16 ? (c[j] & 0x0F) : (c[j - 16] >> 4);
      out[j0 + j] = static_cast<float>(q - 8) * d;
    }
  }
}

namespace {

// 32 weights a block by table lookup: the block's 16 possible values (q - 8) * d, exact in fp32 (a 4-bit
// integer times an fp16 scale), are rounded to bf16 once (vcvtneps2bf16: nearest even, as f32_to_bf16)
// and the 32 codes, widened to 16 bits, index them (vpermw).
__attribute__((target("avx2,f16c,avx512f,avx512bw,avx512vl,avx512bf16"))) void dequantize_bf16_avx512(
    uint16_t* out, const uint8_t* codes, const uint16_t* scales, int64_t whole_blocks) {
  const __m128i low = _mm_set1_epi8(0x0F);
  const __m512 steps = _mm512_set_ps(7, 6, 5, 4, 3, 2, 1, 0, -1, -2, -3, -4, -5, -6, -7, -8);  // q - 8
  for (int64_t b = 0; b < whole_blocks; ++b) {
    const __m128i p = _mm_loadu_si128(reinterpret_cast<const __m128i*>(codes + b * 16));
    const __m256i q = _mm256_set_m128i(_mm_and_si128(_mm_srli_epi16(p, 4), low), _mm_and_si128(p, low));
    const __m256bh table = _mm512_cvtneps_pbh(_mm512_mul_ps(steps, _mm512_set1_ps(_cvtsh_ss(scales[b]))));
    const __m512i t = _mm512_zextsi256_si512(reinterpret_cast<const __m256i&>(table));
    const __m512i w = _mm512_permutexvar_epi16(_mm512_cvtepu8_epi16(q), t);
    _mm512_storeu_si512(out + b * kQ4Block, w);
  }
}

bool cpu_has_avx512bf16() {
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
         __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512bf16") &&
         __builtin_cpu_supports("f16c");
}

}  // namespace

void q4_dequantize_row_bf16(uint16_t* out, const uint8_t* codes, const uint16_t* scales, int64_t I) {
  static const bool simd = cpu_has_avx512bf16();
  const int64_t whole = simd ? I / kQ4Block : 0;
  if (whole > 0) dequantize_bf16_avx512(out, codes, scales, whole);
  const int64_t j0 = whole * kQ4Block;
  if (j0 == I) return;
  float tail[kQ4Block * 64];  // the rest: at most the whole row when not vectorised, done in pieces
  for (int64_t b = whole; b < q4_blocks(I); b += 64) {
    const int64_t bs = b * kQ4Block, n = std::min<int64_t>(kQ4Block * 64, I - bs);
    q4_dequantize_row(tail, codes + b * 16, scales + b, n);
    for (int64_t j = 0; j < n; ++j) out[bs + j] = f32_to_bf16(tail[j]);
  }
}

void q8_quantize_row(int8_t* xq, float* xd, int32_t* xsum, const float* x, int64_t I) {
  const int64_t nb = q4_blocks(I);
  for (int64_t b = 0; b < nb; ++b) {
    const int64_t j0 = b * kQ4Block, n = std::min(kQ4Block, I - j0);
    float amax = 0.0f;
    for (int64_t j = 0; j < n; ++j) amax = std::max(amax, std::fabs(x[j0 + j]));
    const float d = amax / 127.0f;
    const float inv = d > 0.0f ? 1.0f / d : 0.0f;
    int32_t sum = 0;
    for (int64_t j = 0; j < kQ4Block; ++j) {
      const int8_t q = j < n ? static_cast<int8_t>(std::nearbyint(x[j0 + j] * inv)) : 0;
      xq[j0 + j] = q;
      sum += q;
    }
    xd[b] = d;
    xsum[b] = sum;
  }
}

namespace {

// The kernels' common signature; the last argument is the streaming prefetch (core/stream_prefetch.h).
using DotFn = void (*)(float*, int64_t, const uint8_t*, const uint16_t*, const int8_t*, const float*,
                       const int32_t*, int64_t, int64_t, int64_t, int64_t, bool, StreamPrefetch);

inline void store(float* dst, float v, bool accumulate) { *dst = accumulate ? *dst + v : v; }

void dot_portable(float* out, int64_t ldo, const uint8_t* codes, const uint16_t* scales, const int8_t* xq,
                  const float* xd, const int32_t* xsum, int64_t M, int64_t nb, int64_t o0, int64_t o1,
                  bool accumulate, StreamPrefetch) {
  for (int64_t o = o0; o < o1; ++o) {
    const uint8_t* cr = codes + o * nb * 16;
    const uint16_t* sr = scales + o * nb;
    for (int64_t m = 0; m < M; ++m) {
      const int8_t* xr = xq + m * nb * kQ4Block;
      float acc = 0.0f;
      for (int64_t b = 0; b < nb; ++b) {
        int32_t isum = 0;
        for (int j = 0; j < 16; ++j) {
          const uint8_t byte = cr[b * 16 + j];
          isum += (byte & 0x0F) * xr[b * kQ4Block + j] + (byte >> 4) * xr[b * kQ4Block + j + 16];
        }
        acc += f16_to_f32(sr[b]) * xd[m * nb + b] * static_cast<float>(isum - 8 * xsum[m * nb + b]);
      }
      store(out + m * ldo + o, acc, accumulate);
    }
  }
}

// The two SIMD kernels differ only in the u8 x s8 -> i32 product of a block (PRODUCT, of w and xv);
// the loop is shared. Two blocks per iteration into two accumulators hide the FMA latency. (Macros, not
// lambdas: a lambda would not inherit the kernel's target attribute; the block is a GNU statement
// expression.)
// One block: its 16 code bytes c unpacked to 32 u8 codes w in order, times its 32 s8 activations x.
#define MOEPP_Q4_BLOCK(c, x, PRODUCT)                                                                        \
  ({                                                                                                          \
    const __m128i p_ = _mm_loadu_si128(reinterpret_cast<const __m128i*>(c));                                \
    const __m256i w = _mm256_set_m128i(_mm_and_si128(_mm_srli_epi16(p_, 4), low), _mm_and_si128(p_, low));  \
    const __m256i xv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x));                             \
    _mm256_cvtepi32_ps(PRODUCT);                                                                              \
  })

#define MOEPP_Q4_SIMD_KERNEL(NAME, TARGET, PRODUCT)                                                           \
  template <PrefetchLevel L>                                                                                  \
  __attribute__((target(TARGET))) void NAME##_rows(float* out, int64_t ldo, const uint8_t* codes,           \
                                                   const uint16_t* scales, const int8_t* xq, const float* xd, \
                                                   const int32_t* xsum, int64_t M, int64_t nb, int64_t o0,  \
                                                   int64_t o1, bool accumulate, int64_t pf) {               \
    const __m128i low = _mm_set1_epi8(0x0F);                                                                \
    [[maybe_unused]] const __m256i ones = _mm256_set1_epi16(1);                                            \
    for (int64_t o = o0; o < o1; ++o) {                                                                     \
      const uint8_t* cr = codes + o * nb * 16;                                                              \
      const uint16_t* sr = scales + o * nb;                                                                 \
      for (int64_t m = 0; m < M; ++m) {                                                                     \
        const int8_t* xr = xq + m * nb * kQ4Block;                                                          \
        const float* dr = xd + m * nb;                                                                      \
        const int32_t* qs = xsum + m * nb;                                                                  \
        __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();                                          \
        float corr = 0.0f;                                                                                  \
        int64_t b = 0;                                                                                      \
        for (; b + 2 <= nb; b += 2) {                                                                       \
          if (m == 0 && (b & 3) == 0) prefetch_line<L>(cr + b * 16 + pf); /* one line: four blocks */      \
          const float s0 = _cvtsh_ss(sr[b]) * dr[b], s1 = _cvtsh_ss(sr[b + 1]) * dr[b + 1];                 \
          a0 = _mm256_fmadd_ps(MOEPP_Q4_BLOCK(cr + b * 16, xr + b * kQ4Block, PRODUCT), _mm256_set1_ps(s0), a0);             \
          a1 = _mm256_fmadd_ps(MOEPP_Q4_BLOCK(cr + (b + 1) * 16, xr + (b + 1) * kQ4Block, PRODUCT), _mm256_set1_ps(s1), a1); \
          corr += s0 * static_cast<float>(qs[b]) + s1 * static_cast<float>(qs[b + 1]);                      \
        }                                                                                                    \
        for (; b < nb; ++b) {                                                                               \
          const float s = _cvtsh_ss(sr[b]) * dr[b];                                                         \
          a0 = _mm256_fmadd_ps(MOEPP_Q4_BLOCK(cr + b * 16, xr + b * kQ4Block, PRODUCT), _mm256_set1_ps(s), a0);              \
          corr += s * static_cast<float>(qs[b]);                                                            \
        }                                                                                                    \
        const __m256 a = _mm256_add_ps(a0, a1);                                                             \
        __m128 h = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));                      \
        h = _mm_add_ps(h, _mm_movehl_ps(h, h));                                                             \
        h = _mm_add_ss(h, _mm_shuffle_ps(h, h, 1));                                                         \
        store(out + m * ldo + o, _mm_cvtss_f32(h) - 8.0f * corr, accumulate);                               \
      }                                                                                                      \
    }                                                                                                        \
  }                                                                                                          \
  void NAME(float* out, int64_t ldo, const uint8_t* codes, const uint16_t* scales, const int8_t* xq,          \
            const float* xd, const int32_t* xsum, int64_t M, int64_t nb, int64_t o0, int64_t o1,              \
            bool accumulate, StreamPrefetch pf) {                                                             \
    with_prefetch_level(pf.level, [&](auto level) {                                                           \
      NAME##_rows<decltype(level)::value>(out, ldo, codes, scales, xq, xd, xsum, M, nb, o0, o1, accumulate,  \
                                          pf.bytes);                                                          \
    });                                                                                                       \
  }

MOEPP_Q4_SIMD_KERNEL(dot_avx2, "avx2,fma,f16c", _mm256_madd_epi16(_mm256_maddubs_epi16(w, xv), ones))
#undef MOEPP_Q4_SIMD_KERNEL
#undef MOEPP_Q4_BLOCK

// AVX-512 VNNI: four blocks (128 weights, one 64-byte line of codes) per step. The input rows are first
// laid out to match the codes, once per call: for each group of four blocks, `lo` holds the first 16
// activations of each block and `hi` the last 16, so that the low nibbles of the 64 code bytes meet `lo`
// and the high nibbles `hi` in one vpdpbusd each, and every 128-bit lane of the result holds one block's
// four partial sums. The block scales then multiply lane-wise (d16: each block's activation scale four
// times), and the +8 correction of the four blocks is one 4-wide FMA (c4: activation scale x code sum).
// Measured against the one-block 256-bit loop it replaces (`moepp bench kernels`): bench/results/kernels.jsonl.
struct alignas(64) Q8Group {
  int8_t lo[64];
  int8_t hi[64];
  float d16[16];
  float c4[4];
};

// out rows [o0, o1) for MB (1-4) input rows given as groups g [MB][ng] (plus, for blocks past the last
// whole group, the plain Q8 rows: `tail` is the first such block); codes prefetched pf bytes ahead into L.
template <int MB, PrefetchLevel L>
__attribute__((target("avx2,fma,f16c,avx512f,avx512bw,avx512vnni"))) void q4_rows_avx512(
    float* out, int64_t ldo, const uint8_t* codes, const uint16_t* scales, const Q8Group* g, const int8_t* xq,
    const float* xd, const int32_t* xsum, int64_t nb, int64_t ng, int64_t o0, int64_t o1, bool accumulate,
    int64_t pf) {
  const __m512i low = _mm512_set1_epi8(0x0F);
  const __m512i spread = _mm512_set_epi32(3, 3, 3, 3, 2, 2, 2, 2, 1, 1, 1, 1, 0, 0, 0, 0);
  for (int64_t o = o0; o < o1; ++o) {
    const uint8_t* cr = codes + o * nb * 16;
    const uint16_t* sr = scales + o * nb;
    __m512 acc[MB];
    __m128 corr[MB];
    for (int i = 0; i < MB; ++i) {
      acc[i] = _mm512_setzero_ps();
      corr[i] = _mm_setzero_ps();
    }
    for (int64_t k = 0; k < ng; ++k) {
      prefetch_line<L>(cr + k * 64 + pf);
      const __m512i p = _mm512_loadu_si512(cr + k * 64);
      const __m512i wl = _mm512_and_si512(p, low), wh = _mm512_and_si512(_mm512_srli_epi16(p, 4), low);
      const __m128 dw4 = _mm_cvtph_ps(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(sr + k * 4)));
      const __m512 dw16 = _mm512_permutexvar_ps(spread, _mm512_zextps128_ps512(dw4));
      for (int i = 0; i < MB; ++i) {
        const Q8Group& q = g[i * ng + k];
        __m512i d = _mm512_dpbusd_epi32(_mm512_setzero_si512(), wl, _mm512_load_si512(q.lo));
        d = _mm512_dpbusd_epi32(d, wh, _mm512_load_si512(q.hi));
        acc[i] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(d), _mm512_mul_ps(dw16, _mm512_load_ps(q.d16)), acc[i]);
        corr[i] = _mm_fmadd_ps(dw4, _mm_load_ps(q.c4), corr[i]);
      }
    }
    for (int i = 0; i < MB; ++i) {
      __m128 h = _mm_add_ps(corr[i], _mm_movehl_ps(corr[i], corr[i]));
      h = _mm_add_ss(h, _mm_shuffle_ps(h, h, 1));
      float v = _mm512_reduce_add_ps(acc[i]) - 8.0f * _mm_cvtss_f32(h);
      for (int64_t b = ng * 4; b < nb; ++b) {  // blocks past the last group of four
        const int8_t* xr = xq + i * nb * kQ4Block + b * kQ4Block;
        int32_t isum = 0;
        for (int j = 0; j < 16; ++j) isum += (cr[b * 16 + j] & 0x0F) * xr[j] + (cr[b * 16 + j] >> 4) * xr[j + 16];
        v += _cvtsh_ss(sr[b]) * xd[i * nb + b] * static_cast<float>(isum - 8 * xsum[i * nb + b]);
      }
      store(out + i * ldo + o, v, accumulate);
    }
  }
}

void dot_avx512vnni(float* out, int64_t ldo, const uint8_t* codes, const uint16_t* scales, const int8_t* xq,
                    const float* xd, const int32_t* xsum, int64_t M, int64_t nb, int64_t o0, int64_t o1,
                    bool accumulate, StreamPrefetch pf) {
  const int64_t ng = nb / 4;
  thread_local std::vector<Q8Group> groups;  // [M][ng], made by each calling thread (a few KB)
  groups.resize(static_cast<size_t>(M * ng));
  for (int64_t m = 0; m < M; ++m)
    for (int64_t k = 0; k < ng; ++k) {
      Q8Group& q = groups[m * ng + k];
      for (int b = 0; b < 4; ++b) {
        const int64_t blk = m * nb + k * 4 + b;
        std::memcpy(q.lo + b * 16, xq + blk * kQ4Block, 16);
        std::memcpy(q.hi + b * 16, xq + blk * kQ4Block + 16, 16);
        for (int j = 0; j < 4; ++j) q.d16[b * 4 + j] = xd[blk];
        q.c4[b] = xd[blk] * static_cast<float>(xsum[blk]);
      }
    }
  for (int64_t m0 = 0; m0 < M; m0 += 4) {
    const Q8Group* g = groups.data() + m0 * ng;
    const int8_t* xr = xq + m0 * nb * kQ4Block;
    const float* dr = xd + m0 * nb;
    const int32_t* sr = xsum + m0 * nb;
    float* outr = out + m0 * ldo;
    with_prefetch_level(pf.level, [&](auto level) {
      constexpr PrefetchLevel L = decltype(level)::value;
      switch (std::min<int64_t>(4, M - m0)) {
        case 1: q4_rows_avx512<1, L>(outr, ldo, codes, scales, g, xr, dr, sr, nb, ng, o0, o1, accumulate, pf.bytes); break;
        case 2: q4_rows_avx512<2, L>(outr, ldo, codes, scales, g, xr, dr, sr, nb, ng, o0, o1, accumulate, pf.bytes); break;
        case 3: q4_rows_avx512<3, L>(outr, ldo, codes, scales, g, xr, dr, sr, nb, ng, o0, o1, accumulate, pf.bytes); break;
        default: q4_rows_avx512<4, L>(outr, ldo, codes, scales, g, xr, dr, sr, nb, ng, o0, o1, accumulate, pf.bytes); break;
      }
    });
  }
}

struct Kernel {
  DotFn fn;
  const char* name;
};

bool cpu_runs(const std::string& name) {
  __builtin_cpu_init();
  if (name == "portable") return true;
  const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c");
  if (name == "avx2") return avx2;
  if (name == "avx512vnni")
    return avx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512vnni");
  return false;
}

Kernel kernel_named(const std::string& name) {
  if (name == "avx512vnni") return {dot_avx512vnni, "avx512vnni"};
  if (name == "avx2") return {dot_avx2, "avx2"};
  return {dot_portable, "portable"};
}

Kernel& current() {
  static Kernel k = kernel_named(cpu_runs("avx512vnni") ? "avx512vnni" : cpu_runs("avx2") ? "avx2" : "portable");
  return k;
}

}  // namespace

void q4_dot_rows(float* out, int64_t ldo, const uint8_t* codes, const uint16_t* scales, const int8_t* xq,
                 const float* xd, const int32_t* xsum, int64_t M, int64_t blocks, int64_t o0, int64_t o1,
                 bool accumulate) {
  current().fn(out, ldo, codes, scales, xq, xd, xsum, M, blocks, o0, o1, accumulate, stream_prefetch());
}

const char* q4_kernel_name() { return current().name; }

void q4_force_kernel(const char* name) {
  const std::string n = name;
  check(n == "avx512vnni" || n == "avx2" || n == "portable",
        "unknown q4 kernel '" + n + "' (expected avx512vnni, avx2 or portable)");
  check(cpu_runs(n), "this CPU cannot run the " + n + " q4 kernel");
  current() = kernel_named(n);
}

}  // namespace moepp
