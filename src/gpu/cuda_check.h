// The one place where CUDA runtime and cuBLAS status codes become moepp::Error: every call into CUDA or
// cuBLAS in src/gpu/ goes through MOEPP_CUDA / MOEPP_CUBLAS (or cuda_check / cublas_check with a name),
// and every kernel launch is followed by launch_check naming the kernel, so that a failure names the
// call that failed. Thread-safe (no state).
#pragma once

#include <cublas_v2.h>
#include <cuda_runtime_api.h>

#include <string>

namespace moepp::gpu {

// "CUDA: <call> failed: <error name> (<description>)".
std::string cuda_error_message(cudaError_t e, const std::string& call);
// "cuBLAS: <call> failed: <status name> (<description>)".
std::string cublas_error_message(cublasStatus_t s, const std::string& call);

// Throw moepp::Error with the messages above unless the call succeeded.
void cuda_check(cudaError_t e, const std::string& call);
void cublas_check(cublasStatus_t s, const std::string& call);

// After a kernel launch: throws moepp::Error naming `kernel` when the launch failed (no device, a bad
// launch configuration, an earlier asynchronous fault). Clears the sticky-free launch error.
void launch_check(const char* kernel);

}  // namespace moepp::gpu

// The call's own text names it in the error.
#define MOEPP_CUDA(call) ::moepp::gpu::cuda_check((call), #call)
#define MOEPP_CUBLAS(call) ::moepp::gpu::cublas_check((call), #call)
