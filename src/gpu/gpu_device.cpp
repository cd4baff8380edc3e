// Device discovery (see gpu_device.h).
#include "gpu/gpu_device.h"

#include <cuda_runtime_api.h>

#include "gpu/cuda_check.h"

namespace moepp::gpu {

int device_count(std::string* why) {
  int n = 0;
  const cudaError_t e = cudaGetDeviceCount(&n);
  if (e != cudaSuccess) {
    if (why) *why = cuda_error_message(e, "cudaGetDeviceCount");
    cudaGetLastError();  // clear it: a later query should not see this error
    return 0;
  }
  if (why) *why = n == 0 ? "cudaGetDeviceCount reports 0 devices" : "";
  return n;
}

std::string device_name(int index) {
  cudaDeviceProp p{};
  MOEPP_CUDA(cudaGetDeviceProperties(&p, index));
  return p.name;
}

std::string device_description(int index) {
  cudaDeviceProp p{};
  MOEPP_CUDA(cudaGetDeviceProperties(&p, index));
  return std::string(p.name) + " (sm_" + std::to_string(p.major) + std::to_string(p.minor) + ", " +
         std::to_string(p.multiProcessorCount) + " SMs, " + std::to_string(p.totalGlobalMem >> 30) + " GiB)";
}

}  // namespace moepp::gpu
