// DeviceBuffer<T>: the owner of one cudaMalloc allocation (RAII, move-only), and the copies between host
// vectors and device buffers. A buffer is owned by whoever holds it (layer state, parameters); raw
// pointers from get() are borrowed and must not outlive it. Not thread-safe; the copies are ordered on
// the given stream, and the device-to-host ones wait for it.
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <string>
#include <vector>

#include "gpu/cuda_check.h"

namespace moepp::gpu {

template <class T>
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  explicit DeviceBuffer(size_t n) { ensure(n); }
  ~DeviceBuffer() { release(); }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  DeviceBuffer(DeviceBuffer&& o) noexcept : p_(o.p_), n_(o.n_), cap_(o.cap_) { o.p_ = nullptr, o.n_ = o.cap_ = 0; }
  DeviceBuffer& operator=(DeviceBuffer&& o) noexcept {
    if (this != &o) {
      release();
      p_ = o.p_, n_ = o.n_, cap_ = o.cap_;
      o.p_ = nullptr, o.n_ = o.cap_ = 0;
    }
    return *this;
  }

  // Holds n elements afterwards. Reallocates only when n exceeds the capacity; the contents are then
  // unspecified (as with ensure_shape of core/tensor.h). n = 0 keeps no allocation needed.
  void ensure(size_t n) {
    if (n > cap_) {
      release();
      void* p = nullptr;
      cuda_check(cudaMalloc(&p, n * sizeof(T)), "cudaMalloc(" + std::to_string(n * sizeof(T)) + " bytes)");
      p_ = static_cast<T*>(p);
      cap_ = n;
    }
    n_ = n;
  }
  T* get() { return p_; }
  const T* get() const { return p_; }
  size_t size() const { return n_; }
  bool empty() const { return n_ == 0; }

 private:
  void release() noexcept {
    if (p_) cudaFree(p_);  // cannot throw from a destructor; a failing free leaves nothing to recover
    p_ = nullptr;
    n_ = cap_ = 0;
  }
  T* p_ = nullptr;
  size_t n_ = 0, cap_ = 0;
};

// dst (resized to n) = host[0, n), ordered on `stream`. The host memory may be reused on return
// (pageable memory is staged before cudaMemcpyAsync returns).
template <class T>
void upload(DeviceBuffer<T>& dst, const T* host, size_t n, cudaStream_t stream) {
  dst.ensure(n);
  if (n) MOEPP_CUDA(cudaMemcpyAsync(dst.get(), host, n * sizeof(T), cudaMemcpyHostToDevice, stream));
}
template <class T>
void upload(DeviceBuffer<T>& dst, const std::vector<T>& host, cudaStream_t stream) {
  upload(dst, host.data(), host.size(), stream);
}

// host[0, n) = src[0, n), after everything queued on `stream` before it (waits for the stream).
template <class T>
void download(T* host, const T* src, size_t n, cudaStream_t stream) {
  if (n) MOEPP_CUDA(cudaMemcpyAsync(host, src, n * sizeof(T), cudaMemcpyDeviceToHost, stream));
  MOEPP_CUDA(cudaStreamSynchronize(stream));
}
template <class T>
std::vector<T> download(const T* src, size_t n, cudaStream_t stream) {
  std::vector<T> v(n);
  download(v.data(), src, n, stream);
  return v;
}

// dst[0, n) = 0 bytes, ordered on `stream`.
template <class T>
void zero_async(T* dst, size_t n, cudaStream_t stream) {
  if (n) MOEPP_CUDA(cudaMemsetAsync(dst, 0, n * sizeof(T), stream));
}

}  // namespace moepp::gpu
