// Causal self-attention with grouped KV heads on the GPU, forward and backward, with
// model/attention.h's semantics and layouts (q [B*T, H*hd], k, v [B*T, KVH*hd], lse [B*T, H]; query
// head h reads kv head h / (H / KVH)). fp32 throughout (TF32 off), in both precisions of the model.
//
// How: q, k, v are copied head-major ([B, H, T, hd]; k and v repeated over the G = H / KVH query heads
// of their group), the scores of a chunk of sequences come from one strided-batched cuBLAS GEMM
// ([chunk·H, T, T]), a fused kernel applies the causal mask and the softmax (one warp per row; it keeps
// each row's logsumexp), and a second batched GEMM gives P·V. The backward recomputes P from q, k and
// the logsumexp, forms dS = P ∘ (dP - rowsum(P ∘ dP)) · scale in one kernel, and sums dk, dv over the
// query heads of each group when copying back. The T x T score matrices exist for one chunk of
// sequences at a time (attention_chunk_sequences); masked entries are exact zeros, so the GEMMs over
// whole T x T tiles compute the causal products (at twice the useful FLOPs: the price of cuBLAS here).
#pragma once

#include <cstdint>

#include <cublas_v2.h>
#include <cuda_runtime_api.h>

#include "gpu/device_memory.h"

namespace moepp::gpu {

struct GpuAttnShape {
  int64_t B = 0, T = 0, H = 0, KVH = 0, hd = 0;
};

// Throws moepp::Error unless B, T, H, KVH, hd > 0, KVH divides H, and the sizes fit the kernels' and
// cuBLAS's 32-bit arguments.
void check_attention_shape(const GpuAttnShape& s, const char* what);

// Sequences per chunk so that one chunk's scores ([chunk·H, T, T] floats) stay within max_floats (at
// least 1 sequence; at most B). Host function.
int64_t attention_chunk_sequences(const GpuAttnShape& s, int64_t max_floats);

// Device scratch of both passes, reused across calls and layers (grown on demand).
struct GpuAttnScratch {
  DeviceBuffer<float> qh, kh, vh, oh;  // [B, H, T, hd] head-major copies (kh, vh repeated over groups)
  DeviceBuffer<float> dqh, dkh, dvh;   // [B, H, T, hd] backward
  DeviceBuffer<float> p, ds;           // [chunk·H, T, T] probabilities, score gradients
  int64_t max_score_floats = int64_t{1} << 27;  // per score buffer (512 MiB)
};

// out [B*T, H*hd], lse [B*T, H]; q [B*T, H*hd], k, v [B*T, KVH*hd] (RoPE applied).
void attention_forward(float* out, float* lse, GpuAttnScratch& sc, const float* q, const float* k, const float* v,
                       const GpuAttnShape& s, cublasHandle_t h, cudaStream_t st);

// dq [B*T, H*hd], dk, dv [B*T, KVH*hd] overwritten. dout [B*T, H*hd]; q, k, v and lse as in forward.
void attention_backward(float* dq, float* dk, float* dv, GpuAttnScratch& sc, const float* dout, const float* q,
                        const float* k, const float* v, const float* lse, const GpuAttnShape& s, cublasHandle_t h,
                        cudaStream_t st);

}  // namespace moepp::gpu
