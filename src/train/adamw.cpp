// AdamW update and global gradient-norm clipping.
#include "train/adamw.h"

#include <cmath>

namespace moepp {

bool decays(const std::vector<int64_t>& shape) { return shape.size() >= 2; }
bool decays(const Tensor& t) { return decays(t.shape); }

AdamWStepScalars adamw_step_scalars(const AdamWConfig& cfg, int64_t step, float lr) {
  const double bc1 = 1.0 - std::pow(static_cast<double>(cfg.beta1), static_cast<double>(step));
  const double bc2 = 1.0 - std::pow(static_cast<double>(cfg.beta2), static_cast<double>(step));
  return {static_cast<float>(lr / bc1), static_cast<float>(1.0 / std::sqrt(bc2))};
}

AdamW::AdamW(std::vector<ParamRef> params, AdamWConfig cfg) : params_(std::move(params)), cfg_(cfg) {
  for (const ParamRef& p : params_) {
    m_.emplace_back(p.value->shape);
    v_.emplace_back(p.value->shape);
  }
}

void AdamW::step(float lr, float grad_scale) {
  ++step_;
  const AdamWStepScalars sc = adamw_step_scalars(cfg_, step_, lr);
  const float b1 = cfg_.beta1, b2 = cfg_.beta2, eps = cfg_.eps;
  const float step_size = sc.step_size, inv_sqrt_bc2 = sc.inv_sqrt_bc2;
  for (size_t i = 0; i < params_.size(); ++i) {
    float* w = params_[i].value->ptr();
    const float* g = params_[i].grad->ptr();
    float* m = m_[i].ptr();
    float* v = v_[i].ptr();
    const float wd = decays(*params_[i].value) ? cfg_.weight_decay : 0.0f;
    const int64_t n = static_cast<int64_t>(params_[i].value->numel());
#pragma omp parallel for schedule(static) if (n > 65536)
    for (int64_t j = 0; j < n; ++j) {
      const float gj = g[j] * grad_scale;
      m[j] = b1 * m[j] + (1.0f - b1) * gj;
      v[j] = b2 * v[j] + (1.0f - b2) * gj * gj;
      const float denom = std::sqrt(v[j]) * inv_sqrt_bc2 + eps;
      w[j] -= step_size * m[j] / denom + lr * wd * w[j];
    }
  }
}

float grad_norm(const std::vector<ParamRef>& params) { return static_cast<float>(std::sqrt(grad_sum_squares(params))); }

double grad_sum_squares(const std::vector<ParamRef>& params) {
  double sq = 0.0;
  for (const ParamRef& p : params) {
    const float* g = p.grad->ptr();
    const int64_t n = static_cast<int64_t>(p.grad->numel());
    double s = 0.0;
#pragma omp parallel for simd reduction(+ : s) schedule(static) if (n > 65536)
    for (int64_t j = 0; j < n; ++j) s += static_cast<double>(g[j]) * g[j];
    sq += s;
  }
  return sq;
}

float clip_scale(float norm, float max_norm) {
  return max_norm > 0.0f && norm > max_norm ? max_norm / (norm + 1e-6f) : 1.0f;
}

float clip_grad_norm(const std::vector<ParamRef>& params, float max_norm) {
  const float norm = grad_norm(params);
  const float scale = clip_scale(norm, max_norm);
  if (scale != 1.0f)
    for (const ParamRef& p : params) {
      float* g = p.grad->ptr();
      const int64_t n = static_cast<int64_t>(p.grad->numel());
#pragma omp parallel for schedule(static) if (n > 65536)
      for (int64_t j = 0; j < n; ++j) g[j] *= scale;
    }
  return norm;
}

}  // namespace moepp
