// Host-side tests of src/gpu/gpu_attention and the strided-batched GEMM it runs on: the chunking of the
// score buffers, the shape checks, and the batched GEMM's argument errors (raised before any device
// call). The numerical tests against the CPU attention are in test_gpu_kernels_cpu.cpp.
#include "gpu/gpu_attention.h"

#include <gtest/gtest.h>

#include <climits>

#include "core/error.h"
#include "gpu/gpu_gemm.h"

namespace moepp::gpu {
namespace {

TEST(GpuAttention, ChunksSequencesToTheScoreBudget) {
  const GpuAttnShape s{10, 100, 4, 2, 16};  // 40,000 score floats per sequence
  EXPECT_EQ(attention_chunk_sequences(s, 400000), 10);
  EXPECT_EQ(attention_chunk_sequences(s, 120000), 3);
  EXPECT_EQ(attention_chunk_sequences(s, 1000), 1);  // at least one sequence
  EXPECT_EQ(attention_chunk_sequences(s, int64_t{1} << 40), 10);  // at most B
}

TEST(GpuAttention, RejectsBadShapes) {
  EXPECT_NO_THROW(check_attention_shape({1, 1, 1, 1, 2}, "t"));
  EXPECT_THROW(check_attention_shape({1, 5, 6, 4, 8}, "t"), Error);  // KVH does not divide H
  EXPECT_THROW(check_attention_shape({0, 5, 4, 2, 8}, "t"), Error);
  EXPECT_THROW(check_attention_shape({1, 0, 4, 2, 8}, "t"), Error);
  EXPECT_THROW(check_attention_shape({1, 5, 4, 2, 0}, "t"), Error);
  EXPECT_THROW(check_attention_shape({1, (1 << 20) + 1, 4, 2, 8}, "t"), Error);
  EXPECT_THROW(check_attention_shape({INT_MAX, 5, 4, 2, 8}, "t"), Error);
}

TEST(GpuStridedBatchedGemm, ChecksItsArgumentsBeforeTheDevice) {
  const GemmShape ok{false, true, 4, 4, 8, 8, 8, 4};
  // A batch beyond cuBLAS's int, a negative stride, a leading dimension too small: errors naming the call.
  EXPECT_THROW(gemm_strided_batched(nullptr, ok, 1.0f, nullptr, ElemType::kF32, 32, nullptr, ElemType::kF32, 32, 0.0f,
                                    nullptr, ElemType::kF32, 16, int64_t{INT_MAX} + 1, "t"),
               Error);
  EXPECT_THROW(gemm_strided_batched(nullptr, ok, 1.0f, nullptr, ElemType::kF32, -1, nullptr, ElemType::kF32, 32, 0.0f,
                                    nullptr, ElemType::kF32, 16, 2, "t"),
               Error);
  GemmShape bad = ok;
  bad.ldb = 4;
  EXPECT_THROW(gemm_strided_batched(nullptr, bad, 1.0f, nullptr, ElemType::kF32, 32, nullptr, ElemType::kF32, 32, 0.0f,
                                    nullptr, ElemType::kF32, 16, 2, "t"),
               Error);
  // Nothing to do: no call reaches cuBLAS (the null handle would fail).
  EXPECT_NO_THROW(gemm_strided_batched(nullptr, ok, 1.0f, nullptr, ElemType::kF32, 32, nullptr, ElemType::kF32, 32,
                                       0.0f, nullptr, ElemType::kF32, 16, 0, "t"));
}

}  // namespace
}  // namespace moepp::gpu
