// attention_row: the decode step's attention kernel: one query row over one head's cached keys and
// values, fused (scores, softmax and the weighted sum in one pass over the head's memory, with no
// sgemm call for a 1-row product):
//   s [n] = softmax(q · K^T * scale),  out [hd] = s · V,
// K and V [n, hd] with rows hd apart (contiguous), in fp32 or bfloat16 bit patterns (widened to fp32
// as they are read; the arithmetic is fp32 either way). s [n] is the caller's scratch and receives the
// probabilities. AVX-512: 16 keys a step (one vector accumulator per key, summed by a transpose) when
// hd is a multiple of 16; elsewhere portable loops. bench kernels measures it against sgemm (the
// library path the decoder's tiles of many query rows take). Pure and thread-safe; callers own every
// buffer.
#pragma once

#include <cstdint>

namespace moepp {

// outputs first: out [hd], s [n]; inputs q [hd], k, v [n, hd]; sizes n >= 1, hd >= 1.
void attention_row_f32(float* out, float* s, const float* q, const float* k, const float* v, int64_t n, int64_t hd,
                       float scale);
void attention_row_bf16(float* out, float* s, const float* q, const uint16_t* k, const uint16_t* v, int64_t n,
                        int64_t hd, float scale);

// In place: row [0, valid) = softmax(row [0, valid)), row [valid, n) = 0 (the causal mask of a query
// that sees `valid` keys). Shared by attention_row and the decoder's tiles of query rows.
void causal_softmax_row(float* row, int64_t valid, int64_t n);

}  // namespace moepp
