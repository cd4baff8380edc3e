// RAII owners of the CUDA stream, the cuBLAS handle and events (see gpu_context.h).
#include "gpu/gpu_context.h"

#include "gpu/cuda_check.h"

namespace moepp::gpu {

CudaStream::CudaStream() { MOEPP_CUDA(cudaStreamCreateWithFlags(&s_, cudaStreamNonBlocking)); }
CudaStream::~CudaStream() {
  if (s_) cudaStreamDestroy(s_);
}
void CudaStream::synchronize() const { MOEPP_CUDA(cudaStreamSynchronize(s_)); }

CublasHandle::CublasHandle(cudaStream_t stream) {
  MOEPP_CUBLAS(cublasCreate(&h_));
  try {
    MOEPP_CUBLAS(cublasSetStream(h_, stream));
    MOEPP_CUBLAS(cublasSetPointerMode(h_, CUBLAS_POINTER_MODE_HOST));
    MOEPP_CUBLAS(cublasSetMathMode(h_, CUBLAS_DEFAULT_MATH));
  } catch (...) {
    cublasDestroy(h_);
    throw;
  }
}
CublasHandle::~CublasHandle() {
  if (h_) cublasDestroy(h_);
}

CudaEvent::CudaEvent() { MOEPP_CUDA(cudaEventCreate(&e_)); }
CudaEvent::~CudaEvent() {
  if (e_) cudaEventDestroy(e_);
}
void CudaEvent::record(cudaStream_t stream) { MOEPP_CUDA(cudaEventRecord(e_, stream)); }
float CudaEvent::elapsed_ms(const CudaEvent& start, const CudaEvent& end) {
  MOEPP_CUDA(cudaEventSynchronize(end.e_));
  float ms = 0.0f;
  MOEPP_CUDA(cudaEventElapsedTime(&ms, start.e_, end.e_));
  return ms;
}

}  // namespace moepp::gpu
