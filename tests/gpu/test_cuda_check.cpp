// Tests of src/gpu/cuda_check (host only): CUDA and cuBLAS failures become moepp::Error naming the call.
#include "gpu/cuda_check.h"

#include <gtest/gtest.h>

#include "core/error.h"

namespace moepp::gpu {
namespace {

TEST(CudaCheck, NamesTheFailedCallAndTheError) {
  EXPECT_NO_THROW(cuda_check(cudaSuccess, "cudaMemcpyAsync"));
  try {
    cuda_check(cudaErrorMemoryAllocation, "cudaMalloc(4096 bytes)");
    FAIL() << "no error";
  } catch (const Error& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("CUDA: cudaMalloc(4096 bytes) failed: cudaErrorMemoryAllocation"), std::string::npos) << m;
  }
}

TEST(CudaCheck, NamesTheFailedCublasCall) {
  EXPECT_NO_THROW(cublas_check(CUBLAS_STATUS_SUCCESS, "cublasGemmEx"));
  try {
    cublas_check(CUBLAS_STATUS_NOT_SUPPORTED, "cublasGemmGroupedBatchedEx (expert X·up^T)");
    FAIL() << "no error";
  } catch (const Error& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("cuBLAS: cublasGemmGroupedBatchedEx (expert X·up^T) failed: CUBLAS_STATUS_NOT_SUPPORTED"),
              std::string::npos)
        << m;
  }
}

TEST(CudaCheck, TheMacroNamesItsCallText) {
  try {
    MOEPP_CUDA(cudaErrorInvalidValue);
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("CUDA: cudaErrorInvalidValue failed"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace moepp::gpu
