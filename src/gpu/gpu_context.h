// GpuContext: what every GPU call of one thread runs on: a CUDA stream and a cuBLAS handle bound to it
// (RAII owners; the context owns both and destroys the handle before the stream), plus CudaEvent for
// timing. A context belongs to one thread at a time; everything queued through it is ordered on its
// stream. cuBLAS runs in host pointer mode with the default math mode: fp32 products are computed in
// fp32 (no TF32), BF16 products accumulate in fp32 (CUBLAS_COMPUTE_32F in gpu_gemm.h).
#pragma once

#include <cublas_v2.h>
#include <cuda_runtime_api.h>

namespace moepp::gpu {

class CudaStream {
 public:
  CudaStream();  // a non-blocking stream on the current device; throws moepp::Error
  ~CudaStream();
  CudaStream(const CudaStream&) = delete;
  CudaStream& operator=(const CudaStream&) = delete;
  cudaStream_t get() const { return s_; }
  void synchronize() const;

 private:
  cudaStream_t s_ = nullptr;
};

class CublasHandle {
 public:
  explicit CublasHandle(cudaStream_t stream);  // bound to `stream`, which must outlive the handle
  ~CublasHandle();
  CublasHandle(const CublasHandle&) = delete;
  CublasHandle& operator=(const CublasHandle&) = delete;
  cublasHandle_t get() const { return h_; }

 private:
  cublasHandle_t h_ = nullptr;
};

class CudaEvent {
 public:
  CudaEvent();
  ~CudaEvent();
  CudaEvent(const CudaEvent&) = delete;
  CudaEvent& operator=(const CudaEvent&) = delete;
  void record(cudaStream_t stream);
  // Milliseconds from `start` to `end` (both recorded; waits for `end`).
  static float elapsed_ms(const CudaEvent& start, const CudaEvent& end);

 private:
  cudaEvent_t e_ = nullptr;
};

struct GpuContext {
  CudaStream stream;
  CublasHandle blas{stream.get()};
  cudaStream_t s() const { return stream.get(); }
};

}  // namespace moepp::gpu
