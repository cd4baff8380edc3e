// Half-precision floats: the exact conversions between fp32 and the two 16-bit formats the checkpoints
// store (IEEE fp16 and bfloat16), held as their bit patterns in uint16_t. Pure numerics with no
// dependency: the file formats (io) and the bf16 weight matrices of inference (infer) share them.
#pragma once

#include <cstdint>

namespace moepp {

// Widening is exact. bf16_to_f32 keeps every bit pattern (a NaN stays the same NaN); f16_to_f32 maps
// fp16 subnormals exactly and returns NaNs quieted, as the F16C instruction does.
float bf16_to_f32(uint16_t h);
float f16_to_f32(uint16_t h);

// Narrowing rounds to nearest, ties to even; values beyond the format's range become +-inf, NaN stays
// a (quiet) NaN, and fp16 results below its smallest normal become subnormals (or +-0).
uint16_t f32_to_bf16(float f);
uint16_t f32_to_f16(float f);

}  // namespace moepp
