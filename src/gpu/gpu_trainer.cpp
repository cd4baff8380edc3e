// GpuTrainer: one training step on the GPU (see gpu_trainer.h).
#include "gpu/gpu_trainer.h"

#include <cmath>

#include "core/error.h"
#include "gpu/cuda_check.h"

namespace moepp::gpu {

GpuTrainer::GpuTrainer(const ModelConfig& mc, const ModelParams& init, GpuModelOptions opt, AdamWConfig adam,
                       LrSchedule sched, float grad_clip, GpuContext& ctx)
    : mc_(mc), model_(mc, opt), ctx_(ctx), sched_(sched), grad_clip_(grad_clip) {
  check(std::isfinite(grad_clip), "GpuTrainer: grad_clip must be finite");
  params_ = GpuModelParams::upload(init, mc_, opt.precision, ctx_.s());
  grads_ = GpuModelParams::zeros(mc_, ctx_.s());
  // The optimizer's tensors: every tensor of param_specs in its order, as the CPU trainer lists them.
  std::vector<GpuParamRef> refs;
  for (const ParamSpec& spec : param_specs(mc_)) {
    const GpuModelParams::Span w = params_.span(spec), g = grads_.span(spec);
    if (w.p == nullptr) continue;  // an optional tensor these weights do not have
    check(g.p != nullptr && g.n == w.n, "GpuTrainer: no gradient for '" + spec.name + "'");
    refs.push_back({spec.name, w.p, g.p, w.n, decays(spec.shape)});
  }
  adam_ = std::make_unique<GpuAdamW>(std::move(refs), adam, ctx_.s());
  MOEPP_CUDA(cudaStreamSynchronize(ctx_.s()));
}

GpuStepStats GpuTrainer::step(const int32_t* inputs, const int32_t* targets, int64_t B, int64_t T) {
  check(targets != nullptr, "GpuTrainer::step: a training step needs targets");
  cudaStream_t s = ctx_.s();
  grads_.zero(s);
  GpuStepStats r;
  r.loss = model_.forward(st_, inputs, targets, B, T, params_, /*training=*/true, ctx_);
  r.aux = st_.aux_loss_sum;
  model_.backward(grads_, st_, params_, ctx_);
  r.gnorm = static_cast<float>(std::sqrt(adam_->grad_sum_squares(s)));
  r.lr = sched_.at(adam_->steps());
  adam_->step(r.lr, clip_scale(r.gnorm, grad_clip_), s);
  params_.refresh_bf16(s);
  MOEPP_CUDA(cudaStreamSynchronize(s));
  return r;
}

void GpuTrainer::download_weights(ModelParams& out) { params_.download(out, mc_, ctx_.s()); }
void GpuTrainer::download_grads(ModelParams& out) { grads_.download(out, mc_, ctx_.s()); }

namespace {

// Throws unless adam's tensors are mine (same names and sizes, same order).
void check_same_tensors(const AdamW& adam, const std::vector<GpuParamRef>& mine, const char* what) {
  check(adam.params().size() == mine.size(), std::string(what) + ": " + std::to_string(adam.params().size()) +
                                                 " tensors, the GPU optimizer has " + std::to_string(mine.size()));
  for (size_t i = 0; i < mine.size(); ++i) {
    const ParamRef& r = adam.params()[i];
    check(r.name == mine[i].name && static_cast<int64_t>(r.value->numel()) == mine[i].n,
          std::string(what) + ": tensor " + std::to_string(i) + " is '" + r.name + "', the GPU optimizer's '" +
              mine[i].name + "'");
  }
}

}  // namespace

void GpuTrainer::download_optimizer(AdamW& adam) {
  const std::vector<GpuParamRef>& mine = adam_->params();
  check_same_tensors(adam, mine, "GpuTrainer::download_optimizer");
  for (size_t i = 0; i < mine.size(); ++i) {
    const ParamRef& r = adam.params()[i];
    adam.m()[i] = Tensor(r.value->shape);
    adam.v()[i] = Tensor(r.value->shape);
    download(adam.m()[i].ptr(), adam_->m(i).get(), static_cast<size_t>(mine[i].n), ctx_.s());
    download(adam.v()[i].ptr(), adam_->v(i).get(), static_cast<size_t>(mine[i].n), ctx_.s());
  }
  adam.set_steps(adam_->steps());
}

void GpuTrainer::upload_optimizer(const AdamW& adam) {
  check_same_tensors(adam, adam_->params(), "GpuTrainer::upload_optimizer");
  for (size_t i = 0; i < adam_->params().size(); ++i) {
    const Tensor &m = adam.m()[i], &v = adam.v()[i];
    check(m.numel() == adam.params()[i].value->numel() && v.numel() == m.numel(),
          "GpuTrainer::upload_optimizer: the moments of '" + adam.params()[i].name + "' have the wrong size");
    adam_->set_moments(i, m.ptr(), v.ptr(), ctx_.s());
  }
  adam_->set_steps(adam.steps());
  MOEPP_CUDA(cudaStreamSynchronize(ctx_.s()));
}

}  // namespace moepp::gpu
