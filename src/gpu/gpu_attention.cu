// Causal attention on the GPU: head-major copies, strided-batched cuBLAS GEMMs and the fused causal
// softmax kernels (see gpu_attention.h). Scores of a chunk: row r of [chunk·H·T] is query t = r % T of
// head h = (r / T) % H in sequence b0 + r / (T·H); key c is visible to it when c <= t.
#include "gpu/gpu_attention.h"

#include <algorithm>
#include <climits>
#include <cmath>
#include <string>

#include "core/error.h"
#include "gpu/cuda_check.h"
#include "gpu/device_math.cuh"
#include "gpu/gpu_gemm.h"

namespace moepp::gpu {
namespace {

constexpr int kWarpsPerBlock = 8;

// dst [B, H, T, hd] = src [B*T, (H / rep) * hd]: head h of dst reads head h / rep of src.
__global__ void to_head_major_kernel(float* dst, const float* src, int64_t B, int64_t T, int64_t H, int64_t rep,
                                     int64_t hd) {
  const int64_t total = B * H * T * hd, nsrc = H / rep;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t d = i % hd, t = (i / hd) % T, h = (i / (hd * T)) % H, b = i / (hd * T * H);
    dst[i] = src[((b * T + t) * nsrc + h / rep) * hd + d];
  }
}

// dst [B*T, ndst * hd] = sum over the rep heads g·rep .. g·rep + rep - 1 of src [B, ndst·rep, T, hd].
__global__ void from_head_major_kernel(float* dst, const float* src, int64_t B, int64_t T, int64_t ndst, int64_t rep,
                                       int64_t hd) {
  const int64_t total = B * T * ndst * hd, H = ndst * rep;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t d = i % hd, g = (i / hd) % ndst, n = i / (hd * ndst);
    const int64_t b = n / T, t = n % T;
    float acc = 0.0f;
    for (int64_t j = 0; j < rep; ++j) acc += src[((b * H + g * rep + j) * T + t) * hd + d];
    dst[i] = acc;
  }
}

__device__ __forceinline__ float warp_max(float v) {
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}
__device__ __forceinline__ float warp_sum(float v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

// In place: the scaled scores of R rows become the causal softmax (zeros past the diagonal); lse of
// each row at [(b·T + t)·H + h]. One warp per row (every lane of a warp takes the same row, so the
// shuffles see full warps).
__global__ void causal_softmax_kernel(float* P, float* lse, int64_t R, int64_t T, int64_t H, int64_t b0) {
  const int64_t r = static_cast<int64_t>(blockIdx.x) * kWarpsPerBlock + threadIdx.x / 32;
  const int lane = threadIdx.x & 31;
  if (r >= R) return;
  const int64_t t = r % T, h = (r / T) % H, b = b0 + r / (T * H);
  float* p = P + r * T;
  float mx = -INFINITY;
  for (int64_t c = lane; c <= t; c += 32) mx = fmaxf(mx, p[c]);
  mx = warp_max(mx);
  float sum = 0.0f;
  for (int64_t c = lane; c <= t; c += 32) sum += expf(p[c] - mx);
  sum = warp_sum(sum);
  const float inv = 1.0f / sum;
  for (int64_t c = lane; c < T; c += 32) p[c] = c <= t ? expf(p[c] - mx) * inv : 0.0f;
  if (lane == 0) lse[(b * T + t) * H + h] = mx + logf(sum);
}

// In place: the scaled scores become P = exp(S - lse) (zeros past the diagonal), as forward had them.
__global__ void recompute_probs_kernel(float* P, const float* lse, int64_t R, int64_t T, int64_t H, int64_t b0) {
  const int64_t r = static_cast<int64_t>(blockIdx.x) * kWarpsPerBlock + threadIdx.x / 32;
  const int lane = threadIdx.x & 31;
  if (r >= R) return;
  const int64_t t = r % T, h = (r / T) % H, b = b0 + r / (T * H);
  const float l = lse[(b * T + t) * H + h];
  float* p = P + r * T;
  for (int64_t c = lane; c < T; c += 32) p[c] = c <= t ? expf(p[c] - l) : 0.0f;
}

// In place: dP (= dO·V^T) becomes dS = scale · P ∘ (dP - sum_c P ∘ dP), zeros past the diagonal.
__global__ void causal_softmax_backward_kernel(float* dS, const float* P, int64_t R, int64_t T, float scale) {
  const int64_t r = static_cast<int64_t>(blockIdx.x) * kWarpsPerBlock + threadIdx.x / 32;
  const int lane = threadIdx.x & 31;
  if (r >= R) return;
  const int64_t t = r % T;
  float* d = dS + r * T;
  const float* p = P + r * T;
  float dot = 0.0f;
  for (int64_t c = lane; c <= t; c += 32) dot += p[c] * d[c];
  dot = warp_sum(dot);
  for (int64_t c = lane; c < T; c += 32) d[c] = c <= t ? scale * p[c] * (d[c] - dot) : 0.0f;
}

unsigned row_blocks(int64_t R) { return static_cast<unsigned>((R + kWarpsPerBlock - 1) / kWarpsPerBlock); }

void to_head_major(float* dst, const float* src, const GpuAttnShape& s, int64_t rep, cudaStream_t st) {
  const int64_t total = s.B * s.H * s.T * s.hd;
  to_head_major_kernel<<<grid_blocks(total, 256), 256, 0, st>>>(dst, src, s.B, s.T, s.H, rep, s.hd);
  launch_check("to_head_major_kernel");
}

void from_head_major(float* dst, const float* src, const GpuAttnShape& s, int64_t rep, cudaStream_t st) {
  const int64_t total = s.B * s.T * (s.H / rep) * s.hd;
  from_head_major_kernel<<<grid_blocks(total, 256), 256, 0, st>>>(dst, src, s.B, s.T, s.H / rep, rep, s.hd);
  launch_check("from_head_major_kernel");
}

// sc.qh, kh, vh = the head-major copies of q, k, v (k and v repeated over each group's query heads).
void load_heads(GpuAttnScratch& sc, const float* q, const float* k, const float* v, const GpuAttnShape& s,
                cudaStream_t st) {
  const int64_t G = s.H / s.KVH;
  to_head_major(sc.qh.get(), q, s, 1, st);
  to_head_major(sc.kh.get(), k, s, G, st);
  to_head_major(sc.vh.get(), v, s, G, st);
}

void ensure_scratch(GpuAttnScratch& sc, const GpuAttnShape& s, bool backward) {
  const size_t heads = static_cast<size_t>(s.B * s.H * s.T * s.hd);
  const size_t scores = static_cast<size_t>(attention_chunk_sequences(s, sc.max_score_floats) * s.H * s.T * s.T);
  for (DeviceBuffer<float>* b : {&sc.qh, &sc.kh, &sc.vh, &sc.oh}) b->ensure(heads);
  sc.p.ensure(scores);
  if (backward) {
    for (DeviceBuffer<float>* b : {&sc.dqh, &sc.dkh, &sc.dvh}) b->ensure(heads);
    sc.ds.ensure(scores);
  }
}

// Row-major shapes of the per-head products ([T, hd] and [T, T] matrices, packed).
GemmShape scores_shape(const GpuAttnShape& s) { return {false, true, s.T, s.T, s.hd, s.hd, s.hd, s.T}; }      // X·Y^T
GemmShape pv_shape(const GpuAttnShape& s) { return {false, false, s.T, s.hd, s.T, s.T, s.hd, s.hd}; }       // P·Y
GemmShape ptv_shape(const GpuAttnShape& s) { return {true, false, s.T, s.hd, s.T, s.T, s.hd, s.hd}; }       // P^T·Y

}  // namespace

void check_attention_shape(const GpuAttnShape& s, const char* what) {
  check(s.B > 0 && s.T > 0 && s.H > 0 && s.KVH > 0 && s.hd > 0 && s.H % s.KVH == 0,
        std::string(what) + ": bad attention shape (B, T, H, KVH, hd) = (" + std::to_string(s.B) + ", " +
            std::to_string(s.T) + ", " + std::to_string(s.H) + ", " + std::to_string(s.KVH) + ", " +
            std::to_string(s.hd) + ")");
  check(s.T <= 1 << 20 && s.hd <= 1 << 16 && s.H <= 1 << 16 && s.B <= INT_MAX / s.H,
        std::string(what) + ": attention shape beyond the GPU kernels' limits (T <= 2^20, hd, H <= 2^16, B·H < 2^31)");
}

int64_t attention_chunk_sequences(const GpuAttnShape& s, int64_t max_floats) {
  const int64_t per_seq = s.H * s.T * s.T;
  return std::clamp<int64_t>(max_floats / std::max<int64_t>(per_seq, 1), 1, s.B);
}

void attention_forward(float* out, float* lse, GpuAttnScratch& sc, const float* q, const float* k, const float* v,
                       const GpuAttnShape& s, cublasHandle_t h, cudaStream_t st) {
  check_attention_shape(s, "gpu attention_forward");
  ensure_scratch(sc, s, false);
  const int64_t head = s.T * s.hd, tt = s.T * s.T;
  const float scale = 1.0f / std::sqrt(static_cast<float>(s.hd));
  load_heads(sc, q, k, v, s, st);
  const int64_t chunk = attention_chunk_sequences(s, sc.max_score_floats);
  for (int64_t b0 = 0; b0 < s.B; b0 += chunk) {
    const int64_t bc = std::min(chunk, s.B - b0), nb = bc * s.H, off = b0 * s.H * head, R = nb * s.T;
    gemm_strided_batched(h, scores_shape(s), scale, sc.qh.get() + off, ElemType::kF32, head, sc.kh.get() + off,
                         ElemType::kF32, head, 0.0f, sc.p.get(), ElemType::kF32, tt, nb, "attention scores");
    causal_softmax_kernel<<<row_blocks(R), 32 * kWarpsPerBlock, 0, st>>>(sc.p.get(), lse, R, s.T, s.H, b0);
    launch_check("causal_softmax_kernel");
    gemm_strided_batched(h, pv_shape(s), 1.0f, sc.p.get(), ElemType::kF32, tt, sc.vh.get() + off, ElemType::kF32, head,
                         0.0f, sc.oh.get() + off, ElemType::kF32, head, nb, "attention P·V");
  }
  from_head_major(out, sc.oh.get(), s, 1, st);
}

void attention_backward(float* dq, float* dk, float* dv, GpuAttnScratch& sc, const float* dout, const float* q,
                        const float* k, const float* v, const float* lse, const GpuAttnShape& s, cublasHandle_t h,
                        cudaStream_t st) {
  check_attention_shape(s, "gpu attention_backward");
  ensure_scratch(sc, s, true);
  const int64_t G = s.H / s.KVH, head = s.T * s.hd, tt = s.T * s.T;
  const float scale = 1.0f / std::sqrt(static_cast<float>(s.hd));
  load_heads(sc, q, k, v, s, st);
  to_head_major(sc.oh.get(), dout, s, 1, st);  // oh holds dO in the backward
  const int64_t chunk = attention_chunk_sequences(s, sc.max_score_floats);
  const ElemType f = ElemType::kF32;
  for (int64_t b0 = 0; b0 < s.B; b0 += chunk) {
    const int64_t bc = std::min(chunk, s.B - b0), nb = bc * s.H, off = b0 * s.H * head, R = nb * s.T;
    float* qh = sc.qh.get() + off;
    float* kh = sc.kh.get() + off;
    float* vh = sc.vh.get() + off;
    float* doh = sc.oh.get() + off;
    // P, recomputed from the scores and the forward's logsumexp.
    gemm_strided_batched(h, scores_shape(s), scale, qh, f, head, kh, f, head, 0.0f, sc.p.get(), f, tt, nb,
                         "attention scores (backward)");
    recompute_probs_kernel<<<row_blocks(R), 32 * kWarpsPerBlock, 0, st>>>(sc.p.get(), lse, R, s.T, s.H, b0);
    launch_check("recompute_probs_kernel");
    // dP = dO·V^T, then dS in place.
    gemm_strided_batched(h, scores_shape(s), 1.0f, doh, f, head, vh, f, head, 0.0f, sc.ds.get(), f, tt, nb,
                         "attention dP");
    causal_softmax_backward_kernel<<<row_blocks(R), 32 * kWarpsPerBlock, 0, st>>>(sc.ds.get(), sc.p.get(), R, s.T,
                                                                                   scale);
    launch_check("causal_softmax_backward_kernel");
    gemm_strided_batched(h, ptv_shape(s), 1.0f, sc.p.get(), f, tt, doh, f, head, 0.0f, sc.dvh.get() + off, f, head,
                         nb, "attention dV");
    gemm_strided_batched(h, pv_shape(s), 1.0f, sc.ds.get(), f, tt, kh, f, head, 0.0f, sc.dqh.get() + off, f, head, nb,
                         "attention dQ");
    gemm_strided_batched(h, ptv_shape(s), 1.0f, sc.ds.get(), f, tt, qh, f, head, 0.0f, sc.dkh.get() + off, f, head,
                         nb, "attention dK");
  }
  from_head_major(dq, sc.dqh.get(), s, 1, st);
  from_head_major(dk, sc.dkh.get(), s, G, st);
  from_head_major(dv, sc.dvh.get(), s, G, st);
}

}  // namespace moepp::gpu
