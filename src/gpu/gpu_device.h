// Which GPUs this process sees, asked without failing when there are none: the GPU tests skip and the
// drivers report instead of throwing when no device or no driver is present.
#pragma once

#include <string>

namespace moepp::gpu {

// The number of CUDA devices; 0 when cudaGetDeviceCount reports none or fails (no driver, no device).
// *why (may be null) gets the CUDA error text in that case, "" otherwise.
int device_count(std::string* why = nullptr);

// "NVIDIA H200 (sm_90, 132 SMs, 143 GB)" for device `index`; throws moepp::Error when it cannot be read.
std::string device_description(int index);
std::string device_name(int index);  // the bare name, e.g. "NVIDIA H200"

}  // namespace moepp::gpu
