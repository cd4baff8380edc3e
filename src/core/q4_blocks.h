// Q4 blocks: the 4-bit weight format of inference (WeightMatrix's q4 dtype) and its dot-product kernels.
//
// Format. A row of I weights is cut into ceil(I / 32) blocks of 32 (the last one padded with zeros).
// Each block has one scale d, stored as IEEE fp16, and 32 codes q in [0, 15] meaning (q - 8) · d:
// d = (the block's weight of largest magnitude) / -8, so that weight is exactly -8 · d and the others
// round to the nearest of [-8, 7] · d. Codes are packed two per byte, 16 bytes a block: byte j holds
// weight j in its low nibble and weight j + 16 in its high nibble. A [O, I] matrix is codes
// [O, blocks, 16] bytes and scales [O, blocks] fp16, row-major: 4.5 bits per weight.
//
// Products. An input row x [I] is first quantised the same way to 8 bits (Q8 activations: per block
// of 32 a fp32 scale xd = max|x| / 127, codes xq in [-127, 127], and their sum, the correction for the
// codes' +8 offset); a weight row's dot product is then sum over blocks of d · xd · (sum_j q_j · xq_j
// - 8 · sum_j xq_j), integer inside a block. The kernels: AVX-512 VNNI (vpdpbusd on 512-bit
// vectors, four blocks a step), AVX2 (vpmaddubsw + vpmaddwd), and portable C++; q4_kernel_name() says which one this CPU
// runs (chosen once, at first use, from the CPU's features).
//
// All functions are pure and thread-safe; callers own every buffer.
#pragma once

#include <cstdint>

namespace moepp {

constexpr int64_t kQ4Block = 32;

// Blocks per row of I weights.
inline int64_t q4_blocks(int64_t I) { return (I + kQ4Block - 1) / kQ4Block; }

// codes [q4_blocks(I) * 16], scales [q4_blocks(I)] from w [I].
void q4_quantize_row(uint8_t* codes, uint16_t* scales, const float* w, int64_t I);

// out [I] = the dequantised row (the padding is not written).
void q4_dequantize_row(float* out, const uint8_t* codes, const uint16_t* scales, int64_t I);

// out [I] = the dequantised row rounded to bfloat16 (nearest even; bit patterns), for bf16 products.
// Vectorised (AVX-512 BF16) where the CPU has it; the same values as q4_dequantize_row + f32_to_bf16.
void q4_dequantize_row_bf16(uint16_t* out, const uint8_t* codes, const uint16_t* scales, int64_t I);

// One input row as Q8 blocks: xq [q4_blocks(I) * 32] (padding zero), xd [q4_blocks(I)] scales,
// xsum [q4_blocks(I)] sums of each block's codes.
void q8_quantize_row(int8_t* xq, float* xd, int32_t* xsum, const float* x, int64_t I);

// out[m * ldo + o] (+= when accumulate) = <x_m, W[o]> for o in [o0, o1) and the M quantised input rows
// m (xq + m * blocks * 32, xd + m * blocks, xsum + m * blocks), W given by codes and scales of rows of
// `blocks` blocks. Each weight row is read once for all M input rows.
void q4_dot_rows(float* out, int64_t ldo, const uint8_t* codes, const uint16_t* scales, const int8_t* xq,
                 const float* xd, const int32_t* xsum, int64_t M, int64_t blocks, int64_t o0, int64_t o1,
                 bool accumulate);

// "avx512vnni", "avx2" or "portable": the q4_dot_rows kernel this CPU runs.
const char* q4_kernel_name();

// Forces a kernel ("avx512vnni", "avx2", "portable"; tests and benchmarks compare them). Throws
// moepp::Error for one this CPU cannot run or an unknown name. Not thread-safe with running products.
void q4_force_kernel(const char* name);

}  // namespace moepp
