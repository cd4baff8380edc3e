// Q4 block quantisation and the q4 x q8 dot-product kernels (see q4_blocks.h). Each kernel is compiled
// for its instruction set with a target attribute, so one binary carries all three and picks at run
// time; the build's -march does not decide.
#include "core/q4_blocks.h"

#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>

#include "core/error.h"
#include "core/half_float.h"

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

using DotFn = void (*)(float*, int64_t, const uint8_t*, const uint16_t*, const int8_t*, const float*,
                       const int32_t*, int64_t, int64_t, int64_t, int64_t, bool);

inline void store(float* dst, float v, bool accumulate) { *dst = accumulate ? *dst + v : v; }

void dot_portable(float* out, int64_t ldo, const uint8_t* codes, const uint16_t* scales, const int8_t* xq,
                  const float* xd, const int32_t* xsum, int64_t M, int64_t nb, int64_t o0, int64_t o1,
                  bool accumulate) {
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
  __attribute__((target(TARGET))) void NAME(float* out, int64_t ldo, const uint8_t* codes,                 \
                                            const uint16_t* scales, const int8_t* xq, const float* xd,     \
                                            const int32_t* xsum, int64_t M, int64_t nb, int64_t o0,        \
                                            int64_t o1, bool accumulate) {                                 \
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
  }

MOEPP_Q4_SIMD_KERNEL(dot_avx2, "avx2,fma,f16c", _mm256_madd_epi16(_mm256_maddubs_epi16(w, xv), ones))
MOEPP_Q4_SIMD_KERNEL(dot_avx512vnni, "avx2,fma,f16c,avx512f,avx512vl,avx512vnni",
                     _mm256_dpbusd_epi32(_mm256_setzero_si256(), w, xv))
#undef MOEPP_Q4_SIMD_KERNEL
#undef MOEPP_Q4_BLOCK

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
    return avx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
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
  current().fn(out, ldo, codes, scales, xq, xd, xsum, M, blocks, o0, o1, accumulate);
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
