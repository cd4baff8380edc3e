// The GPU training step as the trainer's StepBackend (see gpu_step_backend.h).
#include "cli/gpu_step_backend.h"

#include "core/error.h"

#ifdef MOEPP_HAVE_CUDA
#include "gpu/gpu_trainer.h"
#endif

namespace moepp::cli {

#ifdef MOEPP_HAVE_CUDA
namespace {

class GpuStepBackend : public StepBackend {
 public:
  explicit GpuStepBackend(gpu::GpuModelOptions opt) : opt_(opt) {}

  void start(const ModelConfig& mc, const ModelParams& params, const AdamW& adam, const AdamWConfig& ac,
             const LrSchedule& sched, float grad_clip) override {
    tr_ = std::make_unique<gpu::GpuTrainer>(mc, params, opt_, ac, sched, grad_clip, ctx_);
    tr_->upload_optimizer(adam);
  }

  BackendStepStats step(const int32_t* inputs, const int32_t* targets, int64_t B, int64_t T) override {
    check(tr_ != nullptr, "GpuStepBackend: step before start");
    const gpu::GpuStepStats r = tr_->step(inputs, targets, B, T);
    BackendStepStats s;
    s.loss = r.loss;
    s.aux = r.aux;
    s.gnorm = r.gnorm;
    s.lr = r.lr;
    for (float f : tr_->state().ffn_experts_per_token) s.ffn.push_back(f);
    return s;
  }

  void sync_to_host(ModelParams& params, AdamW& adam) override {
    check(tr_ != nullptr, "GpuStepBackend: sync_to_host before start");
    tr_->download_weights(params);
    tr_->download_optimizer(adam);
  }

 private:
  gpu::GpuModelOptions opt_;
  gpu::GpuContext ctx_;  // before tr_, which uses it: destroyed after it
  std::unique_ptr<gpu::GpuTrainer> tr_;
};

}  // namespace
#endif

std::unique_ptr<StepBackend> make_step_backend(const std::string& device, const std::string& precision,
                                               const std::string& gemm) {
  if (device == "cpu") return nullptr;
  check(device == "cuda", "moepp train: --device must be cpu or cuda, got '" + device + "'");
#ifdef MOEPP_HAVE_CUDA
  gpu::GpuModelOptions opt;
  opt.precision = gpu::parse_precision(precision, "moepp train: --precision");
  opt.gemm = gpu::parse_grouped_gemm_mode(gemm, "moepp train: --gemm");
  return std::make_unique<GpuStepBackend>(opt);
#else
  (void)precision, (void)gemm;
  throw Error("moepp train: --device cuda: this moepp was built without CUDA (CMake found no nvcc)");
#endif
}

}  // namespace moepp::cli
