// AdamW update and gradient sum of squares kernels (see gpu_adamw.h).
#include "gpu/gpu_adamw.h"

#include "core/error.h"
#include "gpu/cuda_check.h"
#include "gpu/device_math.cuh"

namespace moepp::gpu {
namespace {

constexpr int kThreads = 256;
constexpr int kSumBlocks = 128;  // partial sums per tensor

__global__ void adamw_kernel(float* w, const float* g, float* m, float* v, int64_t n, float grad_scale, float b1,
                             float b2, float eps, float step_size, float inv_sqrt_bc2, float lr, float wd) {
  for (int64_t j = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; j < n;
       j += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const float gj = g[j] * grad_scale;
    const float mj = b1 * m[j] + (1.0f - b1) * gj;
    const float vj = b2 * v[j] + (1.0f - b2) * gj * gj;
    m[j] = mj;
    v[j] = vj;
    const float denom = sqrtf(vj) * inv_sqrt_bc2 + eps;
    w[j] -= step_size * mj / denom + lr * wd * w[j];
  }
}

// part[blockIdx.x] = sum of g^2 over the elements this block visits, in double.
__global__ void sum_squares_kernel(double* part, const float* g, int64_t n) {
  __shared__ double s[kThreads];
  double acc = 0.0;
  for (int64_t j = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; j < n;
       j += static_cast<int64_t>(gridDim.x) * blockDim.x)
    acc += static_cast<double>(g[j]) * g[j];
  s[threadIdx.x] = acc;
  __syncthreads();
  for (int o = kThreads / 2; o > 0; o >>= 1) {
    if (static_cast<int>(threadIdx.x) < o) s[threadIdx.x] += s[threadIdx.x + o];
    __syncthreads();
  }
  if (threadIdx.x == 0) part[blockIdx.x] = s[0];
}

}  // namespace

GpuAdamW::GpuAdamW(std::vector<GpuParamRef> params, AdamWConfig cfg, cudaStream_t s)
    : params_(std::move(params)), cfg_(cfg) {
  for (const GpuParamRef& p : params_) {
    check(p.n >= 0 && (p.n == 0 || (p.value && p.grad)), "GpuAdamW: tensor '" + p.name + "' has no device buffers");
    m_.emplace_back(static_cast<size_t>(p.n));
    v_.emplace_back(static_cast<size_t>(p.n));
    zero_async(m_.back().get(), static_cast<size_t>(p.n), s);
    zero_async(v_.back().get(), static_cast<size_t>(p.n), s);
  }
}

void GpuAdamW::step(float lr, float grad_scale, cudaStream_t s) {
  ++step_;
  const AdamWStepScalars sc = adamw_step_scalars(cfg_, step_, lr);
  for (size_t i = 0; i < params_.size(); ++i) {
    const GpuParamRef& p = params_[i];
    if (p.n == 0) continue;
    adamw_kernel<<<grid_blocks(p.n, kThreads), kThreads, 0, s>>>(
        p.value, p.grad, m_[i].get(), v_[i].get(), p.n, grad_scale, cfg_.beta1, cfg_.beta2, cfg_.eps, sc.step_size,
        sc.inv_sqrt_bc2, lr, p.decay ? cfg_.weight_decay : 0.0f);
    launch_check("adamw_kernel");
  }
}

void GpuAdamW::set_moments(size_t i, const float* m_host, const float* v_host, cudaStream_t s) {
  check(i < params_.size(), "GpuAdamW::set_moments: no tensor " + std::to_string(i));
  upload(m_[i], m_host, static_cast<size_t>(params_[i].n), s);
  upload(v_[i], v_host, static_cast<size_t>(params_[i].n), s);
}

double GpuAdamW::grad_sum_squares(cudaStream_t s) {
  partial_.ensure(params_.size() * kSumBlocks);
  zero_async(partial_.get(), partial_.size(), s);
  for (size_t i = 0; i < params_.size(); ++i) {
    if (params_[i].n == 0) continue;
    sum_squares_kernel<<<kSumBlocks, kThreads, 0, s>>>(partial_.get() + i * kSumBlocks, params_[i].grad, params_[i].n);
    launch_check("sum_squares_kernel");
  }
  partial_host_.resize(partial_.size());
  download(partial_host_.data(), partial_.get(), partial_.size(), s);
  double sum = 0.0;
  for (double x : partial_host_) sum += x;
  return sum;
}

}  // namespace moepp::gpu
