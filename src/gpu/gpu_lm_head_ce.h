// The output head on the GPU: logits = xf · lm_head^T and the mean cross-entropy over the targets != -1,
// with model/lm_head_ce.h's semantics, a chunk of rows at a time so that no more than one chunk of
// [rows, V] logits exists; in training the chunk's gradient is taken while its logits are at hand
// (fused: one logits GEMM per step, as the CPU's fused path), then dxf = G · W and dW += G^T · xf. One
// kernel per chunk does the row max, the logsumexp, the loss term and the softmax-minus-onehot gradient
// in place (one block per row). Products in fp32 or, with BF16 operands, BF16 with fp32 accumulation;
// the softmax and the loss are fp32.
#pragma once

#include <cstdint>
#include <vector>

#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

#include "gpu/device_memory.h"
#include "gpu/gpu_gemm.h"

namespace moepp::gpu {

// Rows per chunk: about 2^26 floats (256 MiB) of logits, at least 1 row, at most N. Host function.
int64_t gpu_lm_head_chunk_rows(int64_t N, int64_t V);

struct GpuLmHeadScratch {
  DeviceBuffer<float> logits;               // [chunk, V] logits, then their gradient
  DeviceBuffer<__nv_bfloat16> g_bf16;   // [chunk, V] the gradient in BF16 (BF16 operands)
  DeviceBuffer<float> row_loss;             // [N] lse - z_target (0 for ignored rows)
  std::vector<float> row_loss_host;
};

// The head's operands: xf [N, D] and W [V, D] as the products read them (type t: fp32, or the BF16
// copies of both).
struct LmHeadOperands {
  const void* xf = nullptr;
  const void* w = nullptr;
  ElemType t = ElemType::kF32;
};

// Returns the mean CE over the targets != -1 (0 when there are none), the sum taken in double on the
// host over the rows in order. lse [N] written. When dxf is not null (training): dxf [N, D]
// overwritten, dW [V, D] fp32 accumulated (+=) with the gradient of the mean. targets_host [N] (the
// host copy; chunks without targets skip the gradient products), targets [N] on the device; values in
// [-1, V) (checked by the caller). Waits for the stream (the loss comes to the host).
float lm_head_ce_forward(float* lse, float* dxf, float* dW, GpuLmHeadScratch& sc, const LmHeadOperands& op,
                         const int32_t* targets, const int32_t* targets_host, int64_t N, int64_t D, int64_t V,
                         cublasHandle_t h, cudaStream_t s);

}  // namespace moepp::gpu
