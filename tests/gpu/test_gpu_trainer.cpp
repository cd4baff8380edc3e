// Tests of src/gpu/gpu_trainer against the committed golden file of the CPU engine (train_golden.h), in
// both builds (the GPU-only build has no CPU model to run live): on any machine, the file reads and this
// machine's ModelParams::init_random gives the file's initial weights (else the step comparison would
// not be meaningful); on a GPU, 5 steps of GpuTrainer reproduce the file's loss, aux loss and gradient
// norm of each step and its final weights' checksum, in F32 (1e-4) and BF16 (6e-2; the bounds of
// test_gpu_model.cpp).
#include "gpu/gpu_trainer.h"

#include <gtest/gtest.h>

#include <cmath>

#include "gpu_test_util.h"
#include "train_golden.h"

namespace moepp::gpu {
namespace {

void expect_near_rel(double got, double want, double bound, const std::string& what) {
  EXPECT_LE(std::fabs(got - want), bound * std::max(1.0, std::fabs(want))) << what << ": " << got << " vs " << want;
}

TEST(GpuTrainGolden, InitialWeightsOfThisMachineMatchTheFile) {
  const test::TrainGolden g = test::read_train_golden(test::kTrainGoldenPath);
  double sum = 0, sumsq = 0;
  test::weight_checksums(test::train_golden_weights(g), g.cfg, &sum, &sumsq);
  expect_near_rel(sum, g.init_sum, 1e-9, "sum of the initial weights");
  expect_near_rel(sumsq, g.init_sumsq, 1e-9, "sum of squares of the initial weights");
  EXPECT_EQ(g.loss.size(), 5u);
}

void run_golden(Precision prec, double bound) {
  const test::TrainGolden g = test::read_train_golden(test::kTrainGoldenPath);
  GpuContext ctx;
  GpuTrainer tr(g.cfg, test::train_golden_weights(g), {prec, GroupedGemmMode::kPerProduct}, g.adam, g.sched,
                g.grad_clip, ctx);
  for (size_t s = 0; s < g.loss.size(); ++s) {
    const GpuStepStats r = tr.step(g.inputs.data(), g.targets.data(), g.B, g.T);
    const std::string tag = std::string(precision_name(prec)) + " step " + std::to_string(s);
    std::printf("%s: loss %.7f (cpu %.7f) aux %.7f (cpu %.7f) gnorm %.7f (cpu %.7f)\n", tag.c_str(), r.loss, g.loss[s],
                r.aux, g.aux[s], r.gnorm, g.gnorm[s]);
    expect_near_rel(r.loss, g.loss[s], bound, tag + " loss");
    expect_near_rel(r.aux, g.aux[s], bound, tag + " aux");
    expect_near_rel(r.gnorm, g.gnorm[s], bound, tag + " gnorm");
  }
  ModelParams w = ModelParams::zeros(g.cfg);
  tr.download_weights(w);
  double sum = 0, sumsq = 0;
  test::weight_checksums(w, g.cfg, &sum, &sumsq);
  expect_near_rel(sumsq, g.final_sumsq, bound, std::string(precision_name(prec)) + " final sum of squares");
}

TEST(GpuTrainer, FiveStepsMatchTheGoldenFileInF32) {
  MOEPP_REQUIRE_GPU();
  run_golden(Precision::kF32, 1e-4);
}

TEST(GpuTrainer, FiveStepsMatchTheGoldenFileInBF16WithinItsBound) {
  MOEPP_REQUIRE_GPU();
  run_golden(Precision::kBF16, 6e-2);
}

}  // namespace
}  // namespace moepp::gpu
