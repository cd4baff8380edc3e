// `moepp bench …`: registration of the benchmark subcommands (gemm, layer, train, infer, kernels, ep) on the CLI.
#include <memory>
#include <string>

#include "cli/commands.h"
#include "core/error.h"
#include "ep_bench.h"
#include "gemm_bench.h"
#include "infer_bench.h"
#include "kernel_bench.h"
#include "layer_bench.h"
#include "train_bench.h"

namespace moepp::cli {
namespace {

void check_status(const char* what, int rc) {
  if (rc != 0) throw Error(std::string(what) + " failed (status " + std::to_string(rc) + ")");
}

}  // namespace

void register_bench_command(CLI::App& app) {
  CLI::App* bench = app.add_subcommand("bench", "Benchmarks (GEMM backends, the MoE++ layer, training and inference throughput)");
  bench->require_subcommand(1);

  // moepp bench gemm [--json] [--reps N] [--bf16-packed]
  struct GemmArgs {
    bool json = false, bf16_packed = false;
    int reps = 5;
  };
  auto g = std::make_shared<GemmArgs>();
  CLI::App* gemm = bench->add_subcommand(
      "gemm", "sgemm GFLOP/s, OpenBLAS vs oneDNN (and auto), at the MoE expert shapes");
  gemm->add_flag("--json", g->json, "One JSON object per line per shape");
  gemm->add_option("--reps", g->reps, "Timings per shape and backend; the best is reported")
      ->capture_default_str();
  gemm->add_flag("--bf16-packed", g->bf16_packed,
                 "Instead: bf16 products of many rows, plain layout vs weights packed once (--packed-prefill), "
                 "at the benchmark model's expert shapes; JSON lines");
  gemm->callback([g] {
    if (g->reps < 1) throw Error("bench gemm: --reps must be >= 1 (got " + std::to_string(g->reps) + ")");
    check_status("bench gemm", g->bf16_packed ? run_bf16_packed_bench(g->reps) : run_gemm_bench(g->json, g->reps));
  });

  // moepp bench layer [--json] [--reps N] [--tokens T] [--cases LIST] [--fractions LIST] [--torch]
  //                   [--device cpu|cuda] [--precision f32|bf16] [--gemm per-expert|grouped]
  auto l = std::make_shared<LayerBenchOptions>();
  CLI::App* layer = bench->add_subcommand("layer", "MoE++ layer forward/backward time vs FFN slot fraction");
  layer->add_flag("--json", l->json, "One JSON object per line per measurement");
  layer->add_option("--reps", l->reps, "Timings per measurement; the best is reported")->capture_default_str();
  layer->add_option("--tokens", l->tokens, "Tokens per layer call")->capture_default_str();
  layer->add_option("--cases", l->cases,
                    "Comma list of shapes: 768x2048-8+4, 768x2048-16+4, 768x2048-32+8, 1536x4096-16+4, or all")
      ->capture_default_str();
  layer->add_option("--fractions", l->fractions, "Comma list of target FFN slot fractions")
      ->capture_default_str();
  layer->add_flag("--torch", l->torch, "Also run the PyTorch eager comparison (bench/torch_layer_eager.py)");
  layer->add_option("--device", l->device, "cpu, or cuda: the GPU layer (docs/gpu.md; needs a build with nvcc)")
      ->capture_default_str();
  layer->add_option("--precision", l->precision, "--device cuda: f32 or bf16 experts")->capture_default_str();
  layer->add_option("--gemm", l->gemm, "--device cuda: per-expert or grouped expert GEMMs")->capture_default_str();
  layer->callback([l] {
    if (l->reps < 1) throw Error("bench layer: --reps must be >= 1 (got " + std::to_string(l->reps) + ")");
    if (l->tokens < 1) throw Error("bench layer: --tokens must be >= 1 (got " + std::to_string(l->tokens) + ")");
    check_status("bench layer", run_layer_bench(*l));
  });

  // moepp bench train [--config FILE] [--batch B] [--seq-len T] [--steps N] [--warmup N] [--torch]
  //                   [--device cpu|cuda] [--precision f32|bf16] [--gemm per-expert|grouped]
  auto t = std::make_shared<TrainBenchOptions>();
  CLI::App* train = bench->add_subcommand(
      "train", "Training tokens/s of a model preset (forward, backward, clip, AdamW), optionally vs PyTorch eager");
  train->add_option("--config", t->config,
                    "Training config whose 'model' block (and batch_size, seq_len, optimiser) is used "
                    "(default: configs/slice-moepp.json, vocab_size = its tokenizer_vocab)");
  train->add_option("--batch", t->batch, "Sequences per step (default: the config's batch_size)");
  train->add_option("--seq-len", t->seq_len, "Tokens per sequence (default: the config's seq_len)");
  train->add_option("--steps", t->steps, "Timed steps; the median is reported")->capture_default_str();
  train->add_option("--warmup", t->warmup, "Untimed steps first")->capture_default_str();
  train->add_flag("--torch", t->torch, "Also time the same model in PyTorch eager (bench/torch_train_eager.py)");
  train->add_flag("--profile", t->profile, "Add the wall ms per timed step of each section of the step (\"profile\")");
  train->add_option("--device", t->device, "cpu, or cuda: the GPU training step (docs/gpu.md; needs a build with nvcc)")
      ->capture_default_str();
  train->add_option("--precision", t->precision, "--device cuda: f32 or bf16 products")->capture_default_str();
  train->add_option("--gemm", t->gemm, "--device cuda: per-expert or grouped expert GEMMs")->capture_default_str();
  train->callback([t] {
    if (t->steps < 1) throw Error("bench train: --steps must be >= 1 (got " + std::to_string(t->steps) + ")");
    if (t->warmup < 0) throw Error("bench train: --warmup must be >= 0 (got " + std::to_string(t->warmup) + ")");
    if (t->batch < 0 || t->seq_len < 0) throw Error("bench train: --batch and --seq-len must be >= 1");
    check_status("bench train", run_train_bench(*t));
  });

  // moepp bench kernels [--reps N] [--rows N] [--copies N] [--prefetch SETTING]
  struct KernelArgs {
    int reps = 9;
    int rows = 1;
    int copies = 16;
    std::string prefetch;
  };
  auto kb = std::make_shared<KernelArgs>();
  CLI::App* kernels = bench->add_subcommand(
      "kernels", "moepp's own kernels (Q4 AVX-512 VNNI weight rows; with --rows 1 the fused decode attention) vs the alternatives");
  kernels->add_option("--reps", kb->reps, "Interleaved timings per kernel pair")->capture_default_str();
  kernels->add_option("--rows", kb->rows, "Input rows per product (1 = decoding)")->capture_default_str();
  kernels->add_option("--copies", kb->copies, "Copies of each expert matrix per pass (1: cache-resident)")
      ->capture_default_str();
  kernels->add_option("--prefetch", kb->prefetch,
                      "Instead: every dtype's few-row products with the default streaming prefetch (l2_8192) vs this "
                      "setting (l1_BYTES or l2_BYTES, e.g. l1_2048)");
  kernels->callback([kb] {
    check_status("bench kernels", run_kernel_bench(kb->reps, kb->rows, kb->copies, kb->prefetch));
  });

  // moepp bench infer [--dtypes LIST] [--variants LIST] [--prompt N] [--gen N] [--reps N] [--gguf-out PATH]
  //                   [--llama-bench PATH [--llama-quantize PATH] [--pairs N]]
  auto inf = std::make_shared<InferBenchOptions>();
  CLI::App* infer = bench->add_subcommand(
      "infer", "Prefill / decode tokens/s of the KV-cache decoder (F32, BF16, INT8, Q4), vanilla MoE vs MoE++");
  infer->add_option("--dtypes", inf->dtypes, "Comma list of weight dtypes: f32, bf16, int8, q4")->capture_default_str();
  infer->add_option("--variants", inf->variants, "Comma list: moe (8 FFN, top-2), moepp (8 FFN + 4 zero-computation)")
      ->capture_default_str();
  infer->add_option("--prompt", inf->prompt, "Prefill tokens")->capture_default_str();
  infer->add_option("--gen", inf->gen, "Decoded tokens")->capture_default_str();
  infer->add_option("--reps", inf->reps, "Timings per measurement; the best is reported")->capture_default_str();
  infer->add_option("--layers", inf->layers, "Decoder blocks")->capture_default_str();
  infer->add_option("--zc-biases", inf->zc_biases,
                    "MoE++: comma list of --zc-bias values (router shift toward zero-computation experts), each measured")
      ->capture_default_str();
  infer->add_option("--zc-fraction", inf->zc_fraction, "MoE++: target share of slots on zero-computation experts")
      ->capture_default_str();
  infer->add_option("--kv-dtype", inf->kv_dtype,
                    "moepp's KV cache: auto (f32 with f32 weights, bf16 otherwise), f32 or bf16")
      ->capture_default_str();
  infer->add_option("--gguf-out", inf->gguf_out,
                    "Also write the vanilla random model as a GGUF file (llama architecture, Mixtral-style experts)");
  infer->add_option("--save-model", inf->save_model,
                    "Also write the first --variants model's random weights as an F32 checkpoint directory "
                    "(config.json + model.safetensors; e.g. to convert and time its loading)");
  infer->add_option("--gguf-dtype", inf->gguf_dtype, "The --gguf-out file's matrices: f32 or bf16")->capture_default_str();
  infer->add_option("--llama-bench", inf->llama_bench,
                    "llama.cpp's llama-bench binary: run it side by side on the same weights (vanilla model only)");
  infer->add_option("--llama-quantize", inf->llama_quantize,
                    "llama.cpp's llama-quantize binary (default: the one next to --llama-bench)");
  infer->add_option("--pairs", inf->pairs, "Side by side: interleaved (moepp, llama.cpp) pairs per dtype")
      ->capture_default_str();
  infer->add_option("--gguf-dir", inf->gguf_dir, "Side by side: directory for the GGUF files (default: a new /tmp dir)");
  infer->add_flag("--keep-gguf", inf->keep_gguf, "Side by side: keep the GGUF files");
  infer->add_flag("--packed-prefill", inf->packed_prefill,
                  "BF16 weights: also keep a copy packed for products of many rows (faster prefill, twice the "
                  "BF16 weight memory; generate/eval/serve --packed-prefill)");
  infer->add_option("--prefetch", inf->prefetch,
                    "The few-row products' streaming prefetch: l1_BYTES or l2_BYTES (default l2_8192; l1_2048 "
                    "was the former setting)");
  infer->add_flag("--adaptive-threads", inf->adaptive_threads,
                  "Decode steps with the thread count a ThreadGovernor picks (generate/serve --adaptive-threads)");
  infer->add_option("--q4-kernel", inf->q4_kernel,
                    "Q4 weights: run this kernel instead of the best this CPU has (avx512vnni, avx2, portable; "
                    "e.g. avx2 to measure the AVX2 kernel on an AVX-512 machine)");
  infer->add_flag("--profile", inf->profile,
                  "Add the decoder's wall ms per section (qkv, attend, wo, route, experts, head) of the last "
                  "repetition's prefill and per decode step (\"profile\")");
  infer->callback([inf] { check_status("bench infer", run_infer_bench(*inf)); });

  // mpirun -np N moepp bench ep [--cases LIST] [--fractions LIST] [--tokens T] [--reps N]
  auto ep = std::make_shared<EpBenchOptions>();
  CLI::App* epc = bench->add_subcommand(
      "ep", "The MoE layer under expert parallelism (run under mpirun): vanilla vs MoE++, time and bytes exchanged");
  epc->add_option("--cases", ep->cases, "Comma list of layer shapes (see bench layer), or all")->capture_default_str();
  epc->add_option("--fractions", ep->fractions, "Comma list of MoE++ FFN slot fractions")->capture_default_str();
  epc->add_option("--tokens", ep->tokens, "Tokens per rank")->capture_default_str();
  epc->add_option("--reps", ep->reps, "Repetitions (interleaved vanilla / MoE++); medians are reported")
      ->capture_default_str();
  epc->callback([ep] {
    if (ep->reps < 1) throw Error("bench ep: --reps must be >= 1 (got " + std::to_string(ep->reps) + ")");
    if (ep->tokens < 1) throw Error("bench ep: --tokens must be >= 1 (got " + std::to_string(ep->tokens) + ")");
    check_status("bench ep", run_ep_bench(*ep, job_comm()));
  });
}

}  // namespace moepp::cli
