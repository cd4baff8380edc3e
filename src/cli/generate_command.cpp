// `moepp generate`: sample a continuation of a prompt from a checkpoint (or a run directory's latest
// checkpoint) with the KV-cache decoder and the engine (docs/generate.md). The prompt and the text are
// streamed to stdout as they are produced; prefill and decode speeds go to stderr. Under mpirun with
// --ep-size N the FFN experts are split over the N ranks: rank 0 runs the engine and prints, the
// others follow its decoder.
#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "cli/commands.h"
#include "cli/inference_group.h"
#include "core/error.h"
#include "infer/decoder.h"
#include "infer/decoder_followers.h"
#include "infer/engine.h"
#include "infer/model_dir.h"
#include "tokenizer/tokenizer.h"

namespace moepp::cli {
namespace {

namespace fs = std::filesystem;

struct GenArgs {
  std::string model, prompt, dtype = "f32";
  std::string max_tokens = "60", temperature = "0.8", top_k = "40", top_p = "1", min_p = "0",
              repetition_penalty = "1", seed = "1", ctx = "0";
  std::vector<std::string> stop;
  bool ignore_eos = false, no_stream = false;
  int64_t ep_size = 1;
  float zc_bias = 0.0f;
  std::string kv_dtype = "auto";
  bool packed_prefill = false;
  bool adaptive_threads = EngineOptions{}.adaptive_threads;
};

// Option values are read as text and converted here, so that a bad one is a moepp::Error (exit 1)
// naming the option.
int64_t to_int(const std::string& opt, const std::string& s) {
  errno = 0;
  char* end = nullptr;
  const long long v = std::strtoll(s.c_str(), &end, 10);
  check(!s.empty() && end && *end == '\0' && errno == 0, "generate: " + opt + ": '" + s + "' is not an integer");
  return v;
}

float to_float(const std::string& opt, const std::string& s) {
  errno = 0;
  char* end = nullptr;
  const double v = std::strtod(s.c_str(), &end);
  check(!s.empty() && end && *end == '\0' && errno == 0 && std::isfinite(v),
        "generate: " + opt + ": '" + s + "' is not a number");
  return static_cast<float>(v);
}

void run_generate(const GenArgs& a) {
  Comm* group = inference_expert_group(a.ep_size, "generate");
  const int64_t max_tokens = to_int("--max-tokens", a.max_tokens);
  const int64_t top_k = to_int("--top-k", a.top_k);
  const int64_t seed = to_int("--seed", a.seed);
  const int64_t ctx = to_int("--ctx", a.ctx);
  SamplingParams sp;
  sp.temperature = to_float("--temperature", a.temperature);
  sp.top_p = to_float("--top-p", a.top_p);
  sp.min_p = to_float("--min-p", a.min_p);
  sp.repetition_penalty = to_float("--repetition-penalty", a.repetition_penalty);
  check(max_tokens >= 0, "generate: --max-tokens must be >= 0 (got " + a.max_tokens + ")");
  check(sp.temperature >= 0.0f, "generate: --temperature must be >= 0 (got " + a.temperature + ")");
  check(top_k >= 0, "generate: --top-k must be >= 0 (got " + a.top_k + ")");
  check(sp.top_p > 0.0f && sp.top_p <= 1.0f, "generate: --top-p must be in (0, 1] (got " + a.top_p + ")");
  check(sp.min_p >= 0.0f && sp.min_p <= 1.0f, "generate: --min-p must be in [0, 1] (got " + a.min_p + ")");
  check(sp.repetition_penalty > 0.0f, "generate: --repetition-penalty must be > 0 (got " + a.repetition_penalty + ")");
  check(ctx >= 0, "generate: --ctx must be >= 0 (got " + a.ctx + ")");
  for (const std::string& s : a.stop) check(!s.empty(), "generate: --stop: empty stop string");
  sp.top_k = top_k;
  sp.seed = static_cast<uint64_t>(seed);
  const WeightDType dtype = parse_weight_dtype(a.dtype);

  ModelDir md = open_model_dir(a.model, "", "generate");
  md.cfg.set_zc_bias(a.zc_bias);
  const ModelConfig& cfg = md.cfg;
  const Tokenizer& tok = md.tok;

  std::vector<int32_t> prompt = {cfg.bos};
  for (int32_t id : tok.encode(a.prompt)) prompt.push_back(id);
  const int64_t P = static_cast<int64_t>(prompt.size());
  const int64_t limit = ctx > 0 ? ctx : cfg.max_pos;
  check(limit <= cfg.max_pos, "generate: --ctx " + a.ctx + " exceeds the model's max_position_embeddings " +
                                  std::to_string(cfg.max_pos));
  check(P < limit, "generate: the prompt has " + std::to_string(P) + " tokens (bos included), but the context holds " +
                       std::to_string(limit) + " (it must be shorter, to leave room for generated tokens)");

  const auto t_load = std::chrono::steady_clock::now();
  Decoder dec = load_decoder(md, dtype, group, parse_kv_dtype_choice(a.kv_dtype, "--kv-dtype"),
                             a.packed_prefill);
  const double load_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t_load).count();
  if (is_follower(dec)) {
    follow_decoder(dec);
    return;
  }
  FollowerRelease release(dec);  // the followers end with the engine (or when this scope unwinds)

  EngineOptions eo;
  eo.n_slots = 1;
  eo.max_queue = 0;
  eo.max_len = std::min(limit, P + std::max<int64_t>(1, max_tokens));  // the cache holds what is needed
  eo.adaptive_threads = a.adaptive_threads;
  Engine engine(dec, &tok, eo);

  GenerationRequest req;
  req.prompt = prompt;
  req.max_new_tokens = max_tokens;
  req.sampling = sp;
  req.stop = a.stop;
  req.stop_at_eos = !a.ignore_eos;
  FinishEvent fin;
  GenerationCallbacks cb;
  const bool stream = !a.no_stream;
  if (stream) {
    std::fputs(a.prompt.c_str(), stdout);
    std::fflush(stdout);
    cb.on_text = [](const std::string& t) {
      std::fwrite(t.data(), 1, t.size(), stdout);
      std::fflush(stdout);
    };
  }
  cb.on_finish = [&fin](const FinishEvent& ev) { fin = ev; };
  engine.submit(std::move(req), std::move(cb));
  while (engine.step()) {
  }
  release.stop();
  check(fin.reason != "error", "generate: " + fin.error);
  if (!stream) std::fputs((a.prompt + fin.text).c_str(), stdout);
  std::fputs("\n", stdout);
  std::fflush(stdout);

  const double prefill_tps = fin.prefill_s > 0 ? static_cast<double>(fin.prompt_tokens) / fin.prefill_s : 0.0;
  const int64_t decoded = std::max<int64_t>(0, fin.completion_tokens - 1);  // tokens after the first
  const double decode_tps = fin.decode_s > 0 ? static_cast<double>(decoded) / fin.decode_s : 0.0;
  std::fprintf(stderr,
               "generate: weights %s (%.1f MB in memory, %.1f MB read in place from the file, loaded in %.2f s), KV cache %s; "
               "prompt %lld tokens, prefill %.2f s (%.1f tokens/s); generated %lld tokens, decode %.2f s "
               "(%.1f tokens/s); finish_reason %s\n",
               weight_dtype_name(dtype), static_cast<double>(dec.weights().bytes()) / 1e6,
               static_cast<double>(dec.weights().mapped_bytes()) / 1e6, load_s, kv_dtype_name(dec.kv_dtype()),
               static_cast<long long>(fin.prompt_tokens), fin.prefill_s, prefill_tps,
               static_cast<long long>(fin.completion_tokens), fin.decode_s, decode_tps, fin.reason.c_str());
  if (group) std::fprintf(stderr, "generate: %s\n", expert_group_summary(dec).c_str());
  if (a.adaptive_threads)
    std::fprintf(stderr, "generate: adaptive threads: %llu change(s) of the thread count\n",
                 static_cast<unsigned long long>(engine.stats().thread_switches));
}

}  // namespace

void register_generate_command(CLI::App& app) {
  auto a = std::make_shared<GenArgs>();
  CLI::App* gen = app.add_subcommand("generate", "Generate text from a checkpoint with the KV-cache decoder (docs/generate.md)");
  gen->add_option("--model", a->model, "checkpoint directory, or a run directory (its latest checkpoint)")->required();
  gen->add_option("--prompt", a->prompt, "prompt text (bos is prepended)")->required();
  gen->add_option("--max-tokens", a->max_tokens, "most tokens to generate")->capture_default_str();
  gen->add_option("--temperature", a->temperature, "0 = greedy")->capture_default_str();
  gen->add_option("--top-k", a->top_k, "sample among the k most likely (0 = off)")->capture_default_str();
  gen->add_option("--top-p", a->top_p, "nucleus: smallest set with this probability mass (1 = off)")->capture_default_str();
  gen->add_option("--min-p", a->min_p, "drop tokens with p < min_p * p_max (0 = off)")->capture_default_str();
  gen->add_option("--repetition-penalty", a->repetition_penalty, "penalty on tokens already seen (1 = off)")
      ->capture_default_str();
  gen->add_option("--seed", a->seed, "sampling seed")->capture_default_str();
  gen->add_option("--stop", a->stop, "stop string (repeatable); the text ends before it")
      ->allow_extra_args(false);
  gen->add_flag("--ignore-eos", a->ignore_eos, "keep generating after the EOS token");
  gen->add_option("--dtype", a->dtype, "weight storage: f32, bf16, int8 or q4")->capture_default_str();
  gen->add_option("--ctx", a->ctx, "context length (0 = the model's max_position_embeddings)")->capture_default_str();
  gen->add_flag("--no-stream", a->no_stream, "print the text once, at the end");
  add_ep_size_option(gen, a->ep_size);
  add_zc_bias_option(gen, a->zc_bias);
  add_kv_dtype_option(gen, a->kv_dtype);
  add_packed_prefill_option(gen, a->packed_prefill);
  add_adaptive_threads_option(gen, a->adaptive_threads);
  gen->callback([a] { run_generate(*a); });
}

}  // namespace moepp::cli
