// DType names and sizes, and the bulk conversion of stored elements into fp32 (F16 through F16C when
// the CPU has it; see dtype.h).
#include "io/dtype.h"

#include <cstring>

#include "core/half_float.h"

#if defined(__F16C__) && defined(__AVX__)
#include <immintrin.h>
#define MOEPP_HAVE_F16C 1
#endif

namespace moepp::io {

const char* dtype_name(DType d) {
  switch (d) {
    case DType::kF32: return "F32";
    case DType::kF16: return "F16";
    case DType::kBF16: return "BF16";
    case DType::kI32: return "I32";
    case DType::kI64: return "I64";
    case DType::kI8: return "I8";
    case DType::kU8: return "U8";
  }
  return "?";
}

size_t dtype_size(DType d) {
  switch (d) {
    case DType::kF32: return 4;
    case DType::kF16: return 2;
    case DType::kBF16: return 2;
    case DType::kI32: return 4;
    case DType::kI64: return 8;
    case DType::kI8: return 1;
    case DType::kU8: return 1;
  }
  return 0;
}

bool parse_dtype(const std::string& name, DType* d) {
  if (name == "F32") *d = DType::kF32;
  else if (name == "F16") *d = DType::kF16;
  else if (name == "BF16") *d = DType::kBF16;
  else if (name == "I32") *d = DType::kI32;
  else if (name == "I64") *d = DType::kI64;
  else if (name == "I8") *d = DType::kI8;
  else if (name == "U8") *d = DType::kU8;
  else return false;
  return true;
}

void convert_to_f32(DType dt, const uint8_t* src, size_t n, float* dst) {
  switch (dt) {
    case DType::kF32:
      if (n) std::memcpy(dst, src, n * 4);
      return;
    case DType::kBF16:
      for (size_t i = 0; i < n; ++i) {
        uint16_t h;
        std::memcpy(&h, src + 2 * i, 2);
        dst[i] = bf16_to_f32(h);
      }
      return;
    case DType::kF16: {
      size_t i = 0;
#ifdef MOEPP_HAVE_F16C
      for (; i + 8 <= n; i += 8) {
        const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + 2 * i));
        _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(h));
      }
#endif
      for (; i < n; ++i) {
        uint16_t h;
        std::memcpy(&h, src + 2 * i, 2);
        dst[i] = f16_to_f32(h);
      }
      return;
    }
    default:
      return;  // callers check the dtype first
  }
}

}  // namespace moepp::io
