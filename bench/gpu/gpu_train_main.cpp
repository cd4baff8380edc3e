// moepp_gpu_train: the GPU training step's benchmark driver (gpu_train_bench.h, docs/gpu.md) for the
// GPU machine's GPU-only build (the main binary cannot be built there); one JSON line on stdout.
//   --config FILE      a training config (configs/*.json; its "model" block, seed, init_std, lr, grad_clip,
//                      beta1/2, weight_decay, batch_size and seq_len) — required
//   --batch B, --seq-len T   override the config's batch_size / seq_len
//   --steps N (10), --warmup N (3), --precision f32|bf16 (bf16), --gemm per-expert|grouped,
//   --dense-tflops R   the measured dense cuBLAS rate (adds mfu_dense), --commit SHA (copied into the record)
#include <cstdio>
#include <sstream>

#include "core/error.h"
#include "gpu_args.h"
#include "gpu_train_bench.h"
#include "train/train_config.h"
#include "train_batches.h"

namespace moepp {
namespace {

int run(int argc, char** argv) {
  const gpu_cli::Args a(argc, argv,
                        {"--config", "--batch", "--seq-len", "--steps", "--warmup", "--precision", "--gemm",
                         "--dense-tflops", "--commit"},
                        {});
  const std::string path = a.require("--config");
  const TrainConfig tc = TrainConfig::from_file(path);
  GpuTrainBenchOptions o;
  o.name = path;
  o.batch = a.integer("--batch", tc.batch_size, 1, 1 << 20);
  o.seq = a.integer("--seq-len", tc.seq_len, 1, 1 << 20);
  o.model = train_bench_model(tc, o.seq, path);
  o.steps = static_cast<int>(a.integer("--steps", 10, 1, 10000));
  o.warmup = static_cast<int>(a.integer("--warmup", 3, 0, 1000));
  o.lr = tc.lr;
  o.grad_clip = tc.grad_clip;
  o.init_std = tc.init_std;
  o.seed = tc.seed;
  o.adam = AdamWConfig{tc.beta1, tc.beta2, 1e-8f, tc.weight_decay};
  o.gpu.precision = gpu::parse_precision(a.get("--precision", "bf16"), "--precision");
  o.gpu.gemm = gpu::parse_grouped_gemm_mode(a.get("--gemm", "per-expert"), "--gemm");
  if (a.has("--dense-tflops")) {
    std::stringstream ss(a.get("--dense-tflops", ""));
    check(static_cast<bool>(ss >> o.dense_tflops) && ss.eof() && o.dense_tflops > 0,
          "--dense-tflops: expected a positive number");
  }
  o.commit = a.get("--commit", "");
  gpu_train_bench(o, [](const nlohmann::json& j) {
    std::printf("%s\n", j.dump().c_str());
    std::fflush(stdout);
  });
  return 0;
}

}  // namespace
}  // namespace moepp

int main(int argc, char** argv) { return moepp::gpu_cli::guarded_main("moepp_gpu_train", moepp::run, argc, argv); }
