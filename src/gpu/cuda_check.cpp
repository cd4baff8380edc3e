// CUDA / cuBLAS status codes to moepp::Error (see cuda_check.h).
#include "gpu/cuda_check.h"

#include "core/error.h"

namespace moepp::gpu {

std::string cuda_error_message(cudaError_t e, const std::string& call) {
  return "CUDA: " + call + " failed: " + cudaGetErrorName(e) + " (" + cudaGetErrorString(e) + ")";
}

std::string cublas_error_message(cublasStatus_t s, const std::string& call) {
  return "cuBLAS: " + call + " failed: " + cublasGetStatusName(s) + " (" + cublasGetStatusString(s) + ")";
}

void cuda_check(cudaError_t e, const std::string& call) {
  if (e != cudaSuccess) throw Error(cuda_error_message(e, call));
}

void cublas_check(cublasStatus_t s, const std::string& call) {
  if (s != CUBLAS_STATUS_SUCCESS) throw Error(cublas_error_message(s, call));
}

void launch_check(const char* kernel) {
  const cudaError_t e = cudaGetLastError();
  if (e != cudaSuccess) throw Error(cuda_error_message(e, std::string("launch of ") + kernel));
}

}  // namespace moepp::gpu
