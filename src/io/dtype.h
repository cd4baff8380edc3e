// DType: the element types of stored tensors (safetensors dtypes, PyTorch storage classes), their
// names and sizes, and the bulk conversion of stored elements into fp32. The scalar fp16 / bf16
// conversions themselves are core's (core/half_float.h).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace moepp::io {

// I8 and U8 hold quantised weights (moepp convert --dtype int8|q4: docs/checkpoints.md).
enum class DType { kF32, kF16, kBF16, kI32, kI64, kI8, kU8 };

const char* dtype_name(DType d);          // "F32", "F16", "BF16", "I32", "I64", "I8", "U8"
size_t dtype_size(DType d);               // bytes per element
// The DType named `name` (as dtype_name writes it) into *d; false for any other name.
bool parse_dtype(const std::string& name, DType* d);

// Converts n elements of type `dt` stored little-endian at `src` (no alignment needed) into fp32 at
// `dst`. Defined for F32, F16 and BF16 (exact); for any other dtype it does nothing: callers check.
void convert_to_f32(DType dt, const uint8_t* src, size_t n, float* dst);

}  // namespace moepp::io
