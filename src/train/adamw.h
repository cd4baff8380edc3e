// AdamW (decoupled weight decay) over a list of named parameters, with its state (m, v, step) kept
// per parameter so that it can be checkpointed and restored exactly.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/tensor.h"

namespace moepp {

struct ParamRef {
  std::string name;
  Tensor* value;
  Tensor* grad;
};

struct AdamWConfig {
  float beta1 = 0.9f, beta2 = 0.95f, eps = 1e-8f;
  float weight_decay = 0.1f;
};

// Weight decay applies to matrices (rank >= 2: linears, embeddings, lm_head, router, gate_map) and not
// to vectors (RMSNorm weights, constant experts' v).
bool decays(const Tensor& t);
bool decays(const std::vector<int64_t>& shape);  // the same rule on a shape (e.g. a ParamSpec's)

// The scalars of one AdamW update after `step` steps (1-based: the update's own number) at learning rate
// lr: step_size = lr / (1 - beta1^step), inv_sqrt_bc2 = 1 / sqrt(1 - beta2^step), bias corrections in
// double. Shared by AdamW::step and the GPU optimizer (gpu/gpu_adamw.h).
struct AdamWStepScalars {
  float step_size = 0.0f, inv_sqrt_bc2 = 0.0f;
};
AdamWStepScalars adamw_step_scalars(const AdamWConfig& cfg, int64_t step, float lr);

class AdamW {
 public:
  AdamW(std::vector<ParamRef> params, AdamWConfig cfg);

  // One update with learning rate lr: p -= lr * (m_hat / (sqrt(v_hat) + eps) + wd * p), where the
  // gradient is grad * grad_scale (gradient clipping fused into the update: the same floats as scaling the
  // gradients in place first, without a pass over them).
  void step(float lr, float grad_scale = 1.0f);

  int64_t steps() const { return step_; }
  void set_steps(int64_t s) { step_ = s; }
  const std::vector<ParamRef>& params() const { return params_; }
  std::vector<Tensor>& m() { return m_; }
  const std::vector<Tensor>& m() const { return m_; }
  const std::vector<Tensor>& v() const { return v_; }
  std::vector<Tensor>& v() { return v_; }

 private:
  std::vector<ParamRef> params_;
  AdamWConfig cfg_;
  std::vector<Tensor> m_, v_;
  int64_t step_ = 0;
};

// Global L2 norm of all gradients (squares summed in double).
float grad_norm(const std::vector<ParamRef>& params);

// The sum of the squares of all gradients, in double (grad_norm's square, before the root).
double grad_sum_squares(const std::vector<ParamRef>& params);

// The factor clipping to max_norm applies to gradients of global norm `norm`: max_norm / (norm + 1e-6)
// when norm > max_norm > 0, else 1 (max_norm <= 0: no clipping).
float clip_scale(float norm, float max_norm);

// Global L2 norm of all gradients; scales them in place by clip_scale(norm, max_norm). Returns the norm
// before clipping. (The trainer passes clip_scale to AdamW::step instead.)
float clip_grad_norm(const std::vector<ParamRef>& params, float max_norm);

}  // namespace moepp
