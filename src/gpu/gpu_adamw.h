// AdamW with fp32 master weights on the GPU, and the global gradient norm for clipping: the update of
// train/adamw.h (the same per-step scalars, adamw_step_scalars; the same decoupled weight decay; the
// clipping factor applied as a gradient scale inside the update, as AdamW::step(lr, grad_scale) does).
// Owns the moment buffers m and v of every tensor (device, fp32, zeroed at construction); the weights
// and gradients are borrowed device buffers that must outlive the optimizer. Everything runs on the
// given stream; grad_sum_squares waits for it. One thread at a time.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <cuda_runtime_api.h>

#include "gpu/device_memory.h"
#include "train/adamw.h"

namespace moepp::gpu {

// One tensor of the optimizer: n fp32 weights and their gradient on the device; decay as
// train/adamw.h's decays() says for the tensor (matrices decay, vectors do not).
struct GpuParamRef {
  std::string name;
  float* value = nullptr;
  const float* grad = nullptr;
  int64_t n = 0;
  bool decay = false;
};

class GpuAdamW {
 public:
  GpuAdamW(std::vector<GpuParamRef> params, AdamWConfig cfg, cudaStream_t s);

  // One update (AdamW::step's formula): g = grad · grad_scale; m, v, then
  // w -= step_size · m / (sqrt(v) · inv_sqrt_bc2 + eps) + lr · wd · w.
  void step(float lr, float grad_scale, cudaStream_t s);

  // The sum of the squares of every gradient, in double: per-block partial sums on the device, summed
  // on the host in a fixed order (the same value on every run). Waits for the stream.
  double grad_sum_squares(cudaStream_t s);

  int64_t steps() const { return step_; }
  void set_steps(int64_t s) { step_ = s; }
  // Tensor i's moments = m_host, v_host [params()[i].n] (resuming from a checkpoint), ordered on s.
  void set_moments(size_t i, const float* m_host, const float* v_host, cudaStream_t s);
  const std::vector<GpuParamRef>& params() const { return params_; }
  const DeviceBuffer<float>& m(size_t i) const { return m_[i]; }
  const DeviceBuffer<float>& v(size_t i) const { return v_[i]; }

 private:
  std::vector<GpuParamRef> params_;
  AdamWConfig cfg_;
  std::vector<DeviceBuffer<float>> m_, v_;
  DeviceBuffer<double> partial_;
  std::vector<double> partial_host_;
  int64_t step_ = 0;
};

}  // namespace moepp::gpu
