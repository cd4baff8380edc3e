// Row-major GEMMs on cuBLAS (column-major): the mapping of one row-major product to its cuBLAS call,
// one product (gemm), and a group of independent products of different row counts (grouped_gemm: the
// FFN experts), either one cuBLAS call per product on the stream or one cublasGemmGroupedBatchedEx call
// (switchable, GroupedGemmMode, so that the GPU run measures which is faster). Every product accumulates
// in fp32 (CUBLAS_COMPUTE_32F: plain fp32 for F32 operands, no TF32; fp32 accumulation for BF16).
// Sizes are int64 here and checked against cuBLAS's 32-bit arguments (moepp::Error when too large).
#pragma once

#include <cublas_v2.h>
#include <cuda_runtime_api.h>

#include <cstdint>
#include <string>
#include <vector>

#include "gpu/device_memory.h"

namespace moepp::gpu {

enum class ElemType { kF32, kBF16 };
cudaDataType_t cuda_type(ElemType t);
size_t elem_size(ElemType t);

// C [m, n] = alpha · op(A) · op(B) + beta · C, row-major: op(A) [m, k] is A [m, k] (lda >= k) or, with
// trans_a, A [k, m] transposed (lda >= m); op(B) [k, n] is B [k, n] (ldb >= n) or B [n, k] transposed
// (ldb >= k); C row stride ldc >= n.
struct GemmShape {
  bool trans_a = false, trans_b = false;
  int64_t m = 0, n = 0, k = 0;
  int64_t lda = 0, ldb = 0, ldc = 0;
};

// The column-major call that computes it: C^T [n, m] = op(B)^T · op(A)^T, i.e. cuBLAS's (m, n, k) =
// (n, m, k) with B as its first operand and A as its second.
struct CublasGemmArgs {
  cublasOperation_t op_first = CUBLAS_OP_N, op_second = CUBLAS_OP_N;  // on B, on A
  int m = 0, n = 0, k = 0;
  int ld_first = 1, ld_second = 1, ldc = 1;  // ldb, lda, ldc
};
// Throws moepp::Error (naming `what`) when a size is negative, a leading dimension too small for its
// matrix, or a value beyond cuBLAS's int arguments.
CublasGemmArgs to_cublas(const GemmShape& s, const std::string& what);

// One product (nothing to do when m or n is 0, or k is 0 with beta = 1).
void gemm(cublasHandle_t h, const GemmShape& s, float alpha, const void* A, ElemType ta, const void* B, ElemType tb,
          float beta, void* C, ElemType tc, const char* what);

// `batch` products of one shape (cublasGemmStridedBatchedEx): product i reads A + i·stride_a,
// B + i·stride_b and writes C + i·stride_c (strides in elements; a stride of 0 reuses one operand).
// Nothing to do when batch, m or n is 0. Throws moepp::Error when batch exceeds cuBLAS's int.
void gemm_strided_batched(cublasHandle_t h, const GemmShape& s, float alpha, const void* A, ElemType ta,
                          int64_t stride_a, const void* B, ElemType tb, int64_t stride_b, float beta, void* C,
                          ElemType tc, int64_t stride_c, int64_t batch, const char* what);

enum class GroupedGemmMode { kPerProduct, kGroupedBatched };
const char* grouped_gemm_mode_name(GroupedGemmMode m);
// "per-expert" | "grouped"; throws moepp::Error naming `source` otherwise.
GroupedGemmMode parse_grouped_gemm_mode(const std::string& s, const std::string& source);

// One product of a group: its sizes and operands (the transposes, alpha, beta and types are the group's).
struct GroupedProblem {
  int64_t m = 0, n = 0, k = 0;
  const void* a = nullptr;
  const void* b = nullptr;
  void* c = nullptr;
  int64_t lda = 0, ldb = 0, ldc = 0;
};

// Every product of `problems` (those with m or n = 0 are skipped). kGroupedBatched needs ta == tb == tc
// (cuBLAS's grouped GEMM has no mixed-type form) and uses `ptrs` (device, resized) for the operand
// pointer arrays; kPerProduct issues one gemm each on the handle's stream.
void grouped_gemm(GroupedGemmMode mode, cublasHandle_t h, cudaStream_t stream, DeviceBuffer<const void*>& ptrs,
                  bool trans_a, bool trans_b, float alpha, float beta, const std::vector<GroupedProblem>& problems,
                  ElemType ta, ElemType tb, ElemType tc, const char* what);

// The products of experts whose rows are grouped: expert i (0 <= i < n_experts) owns rows
// [offset[i], offset[i + 1]); make(i, first_row, rows) returns its product; experts without rows are left
// out. The one place that walks the row offsets for the expert GEMMs.
template <class Make>
std::vector<GroupedProblem> expert_problems(const int64_t* offset, int64_t n_experts, Make&& make) {
  std::vector<GroupedProblem> out;
  for (int64_t i = 0; i < n_experts; ++i) {
    const int64_t rows = offset[i + 1] - offset[i];
    if (rows > 0) out.push_back(make(i, offset[i], rows));
  }
  return out;
}

}  // namespace moepp::gpu
