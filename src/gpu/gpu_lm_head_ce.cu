// The output head and the cross-entropy on the GPU, chunked and fused with the gradient (see
// gpu_lm_head_ce.h).
#include "gpu/gpu_lm_head_ce.h"

#include <algorithm>
#include <climits>
#include <string>

#include "core/error.h"
#include "gpu/cuda_check.h"
#include "gpu/device_math.cuh"
#include "gpu/gpu_params.h"

namespace moepp::gpu {
namespace {

constexpr int kThreads = 256;

__device__ float block_max(float v, float* scratch) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  float m = scratch[0];
  for (int w = 1; w < warps; ++w) m = fmaxf(m, scratch[w]);
  __syncthreads();
  return m;
}

// Row r of z [rows, V]: lse, the loss term (lse - z_target, 0 when ignored) and, when grad, the
// gradient of the mean CE in place: (softmax - onehot) · inv_count (zeros for ignored rows).
__global__ void ce_rows_kernel(float* z, float* lse, float* row_loss, const int32_t* targets, int64_t V,
                               float inv_count, bool grad) {
  __shared__ float scratch[32];
  const int64_t r = blockIdx.x;
  float* zr = z + r * V;
  const int32_t t = targets[r];
  const float zt = (threadIdx.x == 0 && t != -1) ? zr[t] : 0.0f;  // read before any thread writes zr
  float mx = -INFINITY;
  for (int64_t j = threadIdx.x; j < V; j += blockDim.x) mx = fmaxf(mx, zr[j]);
  mx = block_max(mx, scratch);
  float sum[1] = {0.0f};
  for (int64_t j = threadIdx.x; j < V; j += blockDim.x) sum[0] += expf(zr[j] - mx);
  block_sum(sum, scratch);
  const float l = mx + logf(sum[0]);
  if (threadIdx.x == 0) {
    lse[r] = l;
    row_loss[r] = t != -1 ? l - zt : 0.0f;
  }
  if (!grad) return;
  const float scale = t != -1 ? inv_count / sum[0] : 0.0f;
  for (int64_t j = threadIdx.x; j < V; j += blockDim.x) {
    float g = expf(zr[j] - mx) * scale;
    if (j == t) g -= inv_count;
    zr[j] = g;
  }
}

}  // namespace

int64_t gpu_lm_head_chunk_rows(int64_t N, int64_t V) {
  const int64_t budget = int64_t{1} << 26;
  return std::clamp<int64_t>(budget / std::max<int64_t>(V, 1), 1, std::max<int64_t>(N, 1));
}

float lm_head_ce_forward(float* lse, float* dxf, float* dW, GpuLmHeadScratch& sc, const LmHeadOperands& op,
                         const int32_t* targets, const int32_t* targets_host, int64_t N, int64_t D, int64_t V,
                         cublasHandle_t h, cudaStream_t s) {
  check(N >= 0 && N <= INT_MAX && D > 0 && V > 0 && V <= INT_MAX,
        "gpu lm_head_ce_forward: bad sizes N = " + std::to_string(N) + ", D = " + std::to_string(D) +
            ", V = " + std::to_string(V));
  int64_t count = 0;
  for (int64_t n = 0; n < N; ++n) count += targets_host[n] != -1;
  if (dxf) zero_async(dxf, static_cast<size_t>(N * D), s);
  if (count == 0) return 0.0f;
  const float inv_count = 1.0f / static_cast<float>(count);
  const int64_t R = gpu_lm_head_chunk_rows(N, V);
  sc.logits.ensure(static_cast<size_t>(R * V));
  sc.row_loss.ensure(static_cast<size_t>(N));
  const size_t es = elem_size(op.t);
  const bool bf16 = op.t == ElemType::kBF16;
  if (dxf && bf16) sc.g_bf16.ensure(static_cast<size_t>(R * V));
  for (int64_t n0 = 0; n0 < N; n0 += R) {
    const int64_t rows = std::min(N, n0 + R) - n0;
    const void* xf = static_cast<const unsigned char*>(op.xf) + static_cast<size_t>(n0 * D) * es;
    // z = xf · W^T   [rows, V]
    gemm(h, {false, true, rows, V, D, D, D, V}, 1.0f, xf, op.t, op.w, op.t, 0.0f, sc.logits.get(), ElemType::kF32,
         "lm_head logits");
    int64_t chunk_targets = 0;
    for (int64_t n = n0; n < n0 + rows; ++n) chunk_targets += targets_host[n] != -1;
    const bool grad = dxf != nullptr && chunk_targets > 0;
    ce_rows_kernel<<<static_cast<unsigned>(rows), kThreads, 0, s>>>(sc.logits.get(), lse + n0, sc.row_loss.get() + n0,
                                                                     targets + n0, V, inv_count, grad);
    launch_check("ce_rows_kernel");
    if (!grad) continue;  // dxf rows stay 0
    const void* g = sc.logits.get();
    if (bf16) {
      convert_to_bf16(sc.g_bf16.get(), sc.logits.get(), rows * V, s);
      g = sc.g_bf16.get();
    }
    // dxf rows = G · W   [rows, D];   dW += G^T · xf rows   [V, D]
    gemm(h, {false, false, rows, D, V, V, D, D}, 1.0f, g, op.t, op.w, op.t, 0.0f, dxf + n0 * D, ElemType::kF32,
         "lm_head dxf");
    gemm(h, {true, false, V, D, rows, V, D, D}, 1.0f, g, op.t, xf, op.t, 1.0f, dW, ElemType::kF32, "lm_head dW");
  }
  sc.row_loss_host.resize(static_cast<size_t>(N));
  download(sc.row_loss_host.data(), sc.row_loss.get(), static_cast<size_t>(N), s);
  double loss = 0.0;
  for (float x : sc.row_loss_host) loss += x;
  return static_cast<float>(loss / static_cast<double>(count));
}

}  // namespace moepp::gpu
