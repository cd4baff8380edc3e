// `moepp bench train`: tokens/s of full training steps (zero grads, forward, backward, grad clipping,
// AdamW step with clipping fused into it: exactly the trainer's step, grad_accum 1) of a preset model on random tokens, and with
// --torch the same model, optimiser and batch in PyTorch eager (bench/torch_train_eager.py), in one
// run. Prints one JSON object; step times are medians over the timed steps.
#include "train_bench.h"

#include <omp.h>
#include <unistd.h>

#include <algorithm>
#include <numeric>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>
#include <vector>

#include "bench_env.h"
#include "bench_stats.h"
#include "core/error.h"
#include "core/gemm.h"
#include "core/profile.h"
#include "json_command.h"
#include "model/model.h"
#include "model/model_params.h"
#include "model/model_state.h"
#include "train/adamw.h"
#include "train/train_config.h"
#include "train_batches.h"
#ifdef MOEPP_HAVE_CUDA
#include "gpu/gpu_train_bench.h"
#endif

namespace moepp {
namespace {

double now_ms() {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// Runs bench/torch_train_eager.py on mc (written to a temporary config.json) with `env` (assignments
// put before the command); null on failure.
nlohmann::json run_torch(const ModelConfig& mc, const TrainConfig& tc, int64_t B, int64_t T, int steps, int warmup,
                         const std::string& env) {
  const std::filesystem::path tmp =
      std::filesystem::temp_directory_path() / ("moepp-train-bench-" + std::to_string(getpid()) + ".json");
  {
    std::ofstream f(tmp);
    if (!f) return {};
    f << mc.to_json().dump() << "\n";
  }
  std::ostringstream cmd;
  cmd << env << (env.empty() ? "" : " ") << "/usr/bin/python3 " << MOEPP_SOURCE_DIR << "/bench/torch_train_eager.py --model " << tmp.string()
      << " --batch " << B << " --seq-len " << T << " --steps " << steps << " --warmup " << warmup << " --lr " << tc.lr
      << " --weight-decay " << tc.weight_decay << " --beta1 " << tc.beta1 << " --beta2 " << tc.beta2 << " --clip "
      << tc.grad_clip << " --init-std " << tc.init_std << " --threads 1," << std::max(2, omp_get_max_threads());
  nlohmann::json r = run_json_command(cmd.str());
  std::filesystem::remove(tmp);
  return r;
}

// --device cuda: GpuTrainer on the same model, batches, seed and optimiser settings (gpu_train_bench.h).
int run_gpu_train_bench(const TrainBenchOptions& opt, const TrainConfig& tc, const ModelConfig& mc, int64_t B,
                        int64_t T) {
#ifdef MOEPP_HAVE_CUDA
  check(!opt.torch && !opt.profile, "bench train: --torch and --profile are CPU options (not with --device cuda)");
  GpuTrainBenchOptions o;
  o.name = opt.config.empty() ? "configs/slice-moepp.json" : opt.config;
  o.model = mc;
  o.batch = B;
  o.seq = T;
  o.steps = opt.steps;
  o.warmup = opt.warmup;
  o.lr = tc.lr;
  o.grad_clip = tc.grad_clip;
  o.init_std = tc.init_std;
  o.seed = tc.seed;
  o.adam = AdamWConfig{tc.beta1, tc.beta2, 1e-8f, tc.weight_decay};
  o.gpu.precision = gpu::parse_precision(opt.precision, "bench train: --precision");
  o.gpu.gemm = gpu::parse_grouped_gemm_mode(opt.gemm, "bench train: --gemm");
  gpu_train_bench(o, [](const nlohmann::json& j) { std::printf("%s\n", j.dump().c_str()); });
  return 0;
#else
  (void)opt, (void)tc, (void)mc, (void)B, (void)T;
  throw Error("bench train: --device cuda: this moepp was built without CUDA (CMake found no nvcc)");
#endif
}

}  // namespace

int run_train_bench(const TrainBenchOptions& opt) {
  check(opt.device == "cpu" || opt.device == "cuda", "bench train: --device must be cpu or cuda, got '" + opt.device + "'");
  check(opt.steps >= 1, "bench train: --steps must be >= 1");
  check(opt.warmup >= 0, "bench train: --warmup must be >= 0");
  const std::string config_path =
      opt.config.empty() ? std::string(MOEPP_SOURCE_DIR) + "/configs/slice-moepp.json" : opt.config;
  const TrainConfig tc = TrainConfig::from_file(config_path);
  const int64_t B = opt.batch > 0 ? opt.batch : tc.batch_size;
  const int64_t T = opt.seq_len > 0 ? opt.seq_len : tc.seq_len;
  check(B >= 1 && T >= 1, "bench train: --batch and --seq-len must be >= 1");

  const ModelConfig mc = train_bench_model(tc, T, "bench train: " + config_path);
  if (opt.device == "cuda") return run_gpu_train_bench(opt, tc, mc, B, T);

  ModelParams params = ModelParams::zeros(mc), grads = ModelParams::zeros(mc);
  params.init_random(mc, tc.seed, tc.init_std);
  std::vector<ParamRef> refs;
  {
    auto pn = params.named(mc);
    auto gn = grads.named(mc);
    for (size_t i = 0; i < pn.size(); ++i) refs.push_back({pn[i].first, pn[i].second, gn[i].second});
  }
  AdamW adam(refs, AdamWConfig{tc.beta1, tc.beta2, 1e-8f, tc.weight_decay});
  const Model model(mc);
  ModelState st;

  // One random batch per step (inputs and next-token targets of B windows of T + 1 tokens).
  const int total = opt.warmup + opt.steps;
  std::vector<std::vector<int32_t>> inputs, targets;
  random_train_batches(inputs, targets, total, B, T, mc.vocab);

  std::vector<double> step_ms, fwd_ms, bwd_ms, opt_ms, ffn_per_tok;
  double loss_first = 0.0, loss_last = 0.0;
  for (int s = 0; s < total; ++s) {
    if (opt.profile && s == opt.warmup) {
      profile_reset();
      set_profiling(true);
    }
    const double t0 = now_ms();
    {
      ProfileScope ps("zero_grads");
      grads.zero();
    }
    const float loss = model.forward(st, inputs[s].data(), targets[s].data(), B, T, params, true);
    const double t1 = now_ms();
    model.backward(grads, st, params);
    const double t2 = now_ms();
    float gnorm;
    {
      ProfileScope ps("grad_norm");
      gnorm = grad_norm(adam.params());
    }
    {
      ProfileScope ps("adamw+clip");
      adam.step(tc.lr, clip_scale(gnorm, tc.grad_clip));
    }
    const double t3 = now_ms();
    if (s == 0) loss_first = loss;
    loss_last = loss;
    if (s < opt.warmup) continue;
    step_ms.push_back(t3 - t0);
    fwd_ms.push_back(t1 - t0);  // includes grads.zero()
    bwd_ms.push_back(t2 - t1);
    opt_ms.push_back(t3 - t2);
    double f = 0.0;
    for (float v : st.ffn_experts_per_token) f += v;
    ffn_per_tok.push_back(f / static_cast<double>(mc.n_layers));
  }

  const int64_t ntok = B * T;
  const double ms = median(step_ms);
  const MoeConfig& e = mc.moe;
  nlohmann::json r = {
      {"bench", "train"},
      {"config", config_path},
      {"model",
       {{"vocab", mc.vocab},
        {"hidden", mc.hidden},
        {"layers", mc.n_layers},
        {"heads", mc.n_heads},
        {"kv_heads", mc.n_kv_heads},
        {"intermediate", e.intermediate},
        {"experts", e.n_experts},
        {"ffn_experts", e.n_ffn()},
        {"zero_experts", e.n_zero},
        {"copy_experts", e.n_copy},
        {"constant_experts", e.n_constant},
        {"top_k", e.top_k},
        {"router", router_name(e.router)},
        {"params", params.numel()}}},
      {"batch", B},
      {"seq_len", T},
      {"tokens_per_step", ntok},
      {"steps", opt.steps},
      {"warmup", opt.warmup},
      {"threads", omp_get_max_threads()},
      {"gemm_backend", gemm_backend_name(gemm_backend())},
      {"gemm_auto_rule", gemm_auto_rule()},
      {"moepp_step_ms", ms},
      {"moepp_step_ms_min", *std::min_element(step_ms.begin(), step_ms.end())},
      {"moepp_forward_ms", median(fwd_ms)},
      {"moepp_backward_ms", median(bwd_ms)},
      {"moepp_clip_adamw_ms", median(opt_ms)},
      {"moepp_tokens_per_s", static_cast<double>(ntok) / (ms * 1e-3)},
      {"moepp_ffn_experts_per_token", median(ffn_per_tok)},
      {"moepp_loss_first", loss_first},
      {"moepp_loss_last", loss_last},
  };
  if (opt.profile) {
    set_profiling(false);
    nlohmann::json prof = nlohmann::json::object();
    double sum = 0.0;
    for (const ProfileEntry& e : profile_entries()) {
      prof[e.name] = e.ms / opt.steps;
      if (e.name.find('/') == std::string::npos) sum += e.ms / opt.steps;  // "a/b" is a part of section a
    }
    r["profile_ms_per_step"] = prof;
    r["profile_unattributed_ms_per_step"] = std::accumulate(step_ms.begin(), step_ms.end(), 0.0) / opt.steps - sum;
  }
  if (opt.torch) {
    // PyTorch gets its best settings: the script tries the thread settings; here the BLAS kernels too.
    // Debian's OpenBLAS 0.3.21 runs its Haswell (AVX2) kernels on AVX-512 CPUs it does not know (such as
    // AMD Zen 5), and ATen's own kernels stop at AVX2 by default; on AVX-512 CPUs the script also runs
    // with OpenBLAS's SkylakeX kernels and ATen's AVX-512 kernels, and the faster run is taken.
    std::vector<std::string> envs = {""};
    if (__builtin_cpu_supports("avx512f")) envs.push_back("OPENBLAS_CORETYPE=SKYLAKEX ATEN_CPU_CAPABILITY=avx512");
    nlohmann::json t, by_env = nlohmann::json::object();
    for (const std::string& env : envs) {
      nlohmann::json one = run_torch(mc, tc, B, T, opt.steps, opt.warmup, env);
      if (one.is_null() || !one.contains("step_ms")) continue;
      by_env[env.empty() ? "default" : env] = one["step_ms"];
      if (t.is_null() || one["step_ms"].get<double>() < t["step_ms"].get<double>()) {
        t = one;
        t["env"] = env.empty() ? "default" : env;
      }
    }
    if (!t.is_null()) {
      const double tms = t["step_ms"].get<double>();
      r["torch_version"] = t.value("torch", "");
      r["torch_step_ms"] = tms;
      r["torch_tokens_per_s"] = static_cast<double>(ntok) / (tms * 1e-3);
      r["torch_env"] = t["env"];
      r["torch_by_env"] = by_env;
      r["torch_threads"] = t["threads"];
      r["torch_blas_threads"] = t["blas_threads"];
      r["torch_by_threads"] = t["by_threads"];
      r["torch_ffn_experts_per_token"] = t.value("ffn_experts_per_token", 0.0);
      r["torch_params"] = t.value("params", 0);
      r["torch_loss_first"] = t.value("loss_first", 0.0);
      r["torch_loss_last"] = t.value("loss_last", 0.0);
      r["speedup"] = tms / ms;
    } else {
      r["torch_error"] = "bench/torch_train_eager.py failed (run it by hand to see why)";
    }
  }
  r.update(bench_environment());
  std::printf("%s\n", r.dump().c_str());
  std::fflush(stdout);
  return 0;
}

}  // namespace moepp
