// `moepp eval ppl` (sliding-window perplexity and bits per byte of a text file) and `moepp eval mc`
// (log-likelihood multiple choice scored as lm-evaluation-harness does), both through the inference
// decoder with F32, BF16 or INT8 weights (docs/eval.md). Results: one JSON line on stdout; a
// human-readable summary and progress on stderr. Under mpirun with --ep-size N the FFN experts are
// split over the N ranks: rank 0 scores and prints, the others follow its decoder.
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "cli/commands.h"
#include "cli/inference_group.h"
#include "core/error.h"
#include "eval/multiple_choice.h"
#include "eval/perplexity.h"
#include "infer/decoder.h"
#include "infer/decoder_followers.h"
#include "infer/model_dir.h"
#include "io/file.h"
#include "tokenizer/tokenizer.h"

namespace moepp::cli {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

struct ModelArgs {
  std::string model, tokenizer, dtype = "f32";
  int64_t batch_tokens = 4096;
  int64_t ep_size = 1;
  float zc_bias = 0.0f;
  std::string kv_dtype = "auto";
  bool packed_prefill = false;
  bool quiet = false;
};

// The model (weights in the requested dtype) and its tokenizer.
struct LoadedModel {
  ModelDir md;
  std::unique_ptr<Decoder> dec;
};

LoadedModel load(const ModelArgs& a, const char* cmd) {
  const std::string who = std::string("eval ") + cmd;
  Comm* group = inference_expert_group(a.ep_size, who);
  check(a.batch_tokens >= 1, who + ": --batch-tokens must be >= 1");
  const WeightDType dtype = parse_weight_dtype(a.dtype);
  LoadedModel m{open_model_dir(a.model, a.tokenizer, who), nullptr};
  m.md.cfg.set_zc_bias(a.zc_bias);
  m.dec = std::make_unique<Decoder>(load_decoder(m.md, dtype, group, parse_kv_dtype_choice(a.kv_dtype, "--kv-dtype"),
                                                    a.packed_prefill));
  return m;
}

void add_model_options(CLI::App* sub, ModelArgs& a) {
  sub->add_option("--model", a.model, "checkpoint directory, or a run directory (its latest checkpoint)")->required();
  sub->add_option("--dtype", a.dtype, "weights of the large matrices: f32, bf16, int8 or q4")->capture_default_str();
  sub->add_option("--tokenizer", a.tokenizer, "SentencePiece model (default: the checkpoint's tokenizer.model)");
  sub->add_option("--batch-tokens", a.batch_tokens,
                  "tokens per forward pass (bounds memory; results do not depend on it)")
      ->capture_default_str();
  sub->add_flag("--quiet", a.quiet, "no progress output");
  add_ep_size_option(sub, a.ep_size);
  add_zc_bias_option(sub, a.zc_bias);
  add_kv_dtype_option(sub, a.kv_dtype);
  add_packed_prefill_option(sub, a.packed_prefill);
}

// Progress on stderr: a line every few seconds (rewritten in place on a terminal).
class Progress {
 public:
  explicit Progress(bool on) : on_(on), tty_(isatty(2)), t0_(Clock::now()), last_(t0_) {}
  double seconds() const { return std::chrono::duration<double>(Clock::now() - t0_).count(); }
  void update(const std::string& line, bool final_update) {
    if (!on_) return;
    const auto now = Clock::now();
    if (!final_update && std::chrono::duration<double>(now - last_).count() < (tty_ ? 0.5 : 5.0)) return;
    last_ = now;
    shown_ = true;
    std::fprintf(stderr, tty_ ? "\r%s   " : "%s\n", line.c_str());
    std::fflush(stderr);
  }
  void end() {
    if (on_ && tty_ && shown_) std::fprintf(stderr, "\n");
  }

 private:
  bool on_, tty_, shown_ = false;
  Clock::time_point t0_, last_;
};

struct PplArgs {
  ModelArgs m;
  std::string text;
  int64_t window = 0, stride = 0, max_tokens = 0;
};

void run_ppl(const PplArgs& a) {
  check(fs::is_regular_file(a.text), "eval ppl: --text " + a.text + ": no such file");
  check(a.window >= 0, "eval ppl: --window must be >= 0");
  check(a.stride >= 0, "eval ppl: --stride must be >= 0");
  LoadedModel m = load(a.m, "ppl");
  if (is_follower(*m.dec)) {
    follow_decoder(*m.dec);
    return;
  }
  FollowerRelease release(*m.dec);
  const ModelConfig& cfg = m.dec->config();
  const std::string text = io::read_file(a.text, "the --text file of eval ppl");
  check(!text.empty(), "eval ppl: --text " + a.text + ": the file is empty");

  std::vector<int32_t> tokens{cfg.bos};
  {
    const std::vector<int32_t> t = m.md.tok.encode(text);
    tokens.insert(tokens.end(), t.begin(), t.end());
  }
  int64_t bytes = static_cast<int64_t>(text.size());
  bool truncated = false;
  if (a.max_tokens > 0 && static_cast<int64_t>(tokens.size()) > a.max_tokens) {
    tokens.resize(static_cast<size_t>(std::max<int64_t>(a.max_tokens, 2)));
    // The bytes the kept tokens cover (decode(encode(s)) == s for moepp's tokenizers).
    bytes = static_cast<int64_t>(m.md.tok.decode(std::vector<int32_t>(tokens.begin() + 1, tokens.end())).size());
    truncated = true;
  }
  check(tokens.size() >= 2, "eval ppl: --text " + a.text + ": the text gives no token");

  eval::PerplexityOptions opt;
  opt.window = a.window > 0 ? a.window : cfg.max_pos;
  check(opt.window <= cfg.max_pos, "eval ppl: --window " + std::to_string(opt.window) +
                                       " exceeds the model's max_position_embeddings " + std::to_string(cfg.max_pos));
  check(opt.window >= 2, "eval ppl: --window must be >= 2");
  opt.max_rows_per_pass = a.m.batch_tokens;
  opt.stride = a.stride > 0 ? a.stride : std::max<int64_t>(1, opt.window / 2);
  check(opt.stride <= opt.window,
        "eval ppl: --stride " + std::to_string(opt.stride) + " exceeds the window " + std::to_string(opt.window));

  Progress prog(!a.m.quiet);
  const eval::PerplexityResult r =
      eval::score_perplexity(*m.dec, tokens, opt, [&](int64_t done, int64_t total, double nll) {
        char buf[160];
        const double s = prog.seconds();
        std::snprintf(buf, sizeof buf, "eval ppl: %lld/%lld tokens, ppl %.3f, %.0f tok/s", static_cast<long long>(done),
                      static_cast<long long>(total), std::exp(nll / static_cast<double>(std::max<int64_t>(done, 1))),
                      s > 0 ? static_cast<double>(done) / s : 0.0);
        prog.update(buf, false);
      });
  prog.end();
  release.stop();
  const double secs = prog.seconds();
  const double bpb = eval::bits_per_byte(r.nll_sum, bytes);

  nlohmann::json j;
  j["task"] = "perplexity";
  j["model"] = m.md.dir;
  j["text"] = a.text;
  j["dtype"] = weight_dtype_name(m.dec->weights().dtype);
  j["kv_dtype"] = kv_dtype_name(m.dec->kv_dtype());
  j["packed_prefill"] = a.m.packed_prefill;
  j["window"] = opt.window;
  j["stride"] = opt.stride;
  j["windows"] = r.windows;
  j["tokens"] = r.tokens;
  j["tokens_scored"] = r.scored;
  j["truncated"] = truncated;
  j["bytes"] = bytes;
  j["nll_sum"] = r.nll_sum;
  j["mean_nll"] = r.mean_nll();
  j["perplexity"] = r.perplexity();
  j["ffn_experts_per_token"] = r.ffn_experts_per_token;
  j["zc_bias"] = a.m.zc_bias;
  j["bits_per_byte"] = bpb;
  j["seconds"] = secs;
  std::printf("%s\n", j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace).c_str());
  std::fflush(stdout);
  std::fprintf(stderr,
               "eval ppl: %s: %lld tokens scored in %lld windows of %lld (stride %lld): mean NLL %.4f nats/token, "
               "perplexity %.3f, %.4f bits/byte (%lld bytes), %s weights, %.1f s\n",
               a.text.c_str(), static_cast<long long>(r.scored), static_cast<long long>(r.windows),
               static_cast<long long>(opt.window), static_cast<long long>(opt.stride), r.mean_nll(), r.perplexity(),
               bpb, static_cast<long long>(bytes), weight_dtype_name(m.dec->weights().dtype), secs);
  if (m.dec->expert_group()) std::fprintf(stderr, "eval ppl: %s\n", expert_group_summary(*m.dec).c_str());
}

struct McArgs {
  ModelArgs m;
  std::string tasks, details;
  int64_t limit = 0;
};

void run_mc(const McArgs& a) {
  check(fs::is_regular_file(a.tasks), "eval mc: --tasks " + a.tasks + ": no such file");
  check(a.limit >= 0, "eval mc: --limit must be >= 0");
  // Validate the whole file before loading the model.
  const std::vector<eval::McItem> items = eval::read_mc_tasks(a.tasks, a.limit);
  LoadedModel m = load(a.m, "mc");
  if (is_follower(*m.dec)) {
    follow_decoder(*m.dec);
    return;
  }
  FollowerRelease release(*m.dec);
  const ModelConfig& cfg = m.dec->config();
  const eval::Encoder enc = [&](std::string_view s) { return m.md.tok.encode(s); };
  std::vector<eval::McEncoded> encoded;
  encoded.reserve(items.size());
  for (const eval::McItem& it : items) {
    encoded.push_back(eval::encode_item(enc, it, cfg.bos, cfg.max_pos, a.tasks + ":" + std::to_string(it.line)));
  }

  Progress prog(!a.m.quiet);
  const std::vector<eval::McScore> scores = eval::score_mc(
      *m.dec, items, encoded,
      [&](int64_t done, int64_t total) {
        prog.update("eval mc: " + std::to_string(done) + "/" + std::to_string(total) + " questions", false);
      },
      a.m.batch_tokens);
  prog.end();
  release.stop();
  const eval::McSummary s = eval::summarize(items, scores);

  if (!a.details.empty()) {
    std::ofstream f(a.details);
    check(static_cast<bool>(f), "eval mc: --details " + a.details + ": cannot write");
    for (size_t i = 0; i < items.size(); ++i) {
      nlohmann::json d;
      d["line"] = items[i].line;
      d["gold"] = items[i].gold;
      d["pred"] = scores[i].pred;
      d["pred_norm"] = scores[i].pred_norm;
      d["loglikelihoods"] = scores[i].loglik;
      std::vector<size_t> ntok;
      for (const auto& c : encoded[i].continuation) ntok.push_back(c.size());
      d["continuation_tokens"] = ntok;
      d["context_tokens"] = encoded[i].context.size();
      f << d.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) << "\n";
    }
    check(static_cast<bool>(f), "eval mc: --details " + a.details + ": write failed");
  }

  nlohmann::json j;
  j["task"] = "multiple_choice";
  j["model"] = m.md.dir;
  j["tasks"] = a.tasks;
  j["dtype"] = weight_dtype_name(m.dec->weights().dtype);
  j["kv_dtype"] = kv_dtype_name(m.dec->kv_dtype());
  j["packed_prefill"] = a.m.packed_prefill;
  j["n"] = s.n;
  j["acc"] = s.acc;
  j["acc_stderr"] = s.acc_stderr;  // NaN (n < 2) is written as null
  j["acc_norm"] = s.acc_norm;
  j["acc_norm_stderr"] = s.acc_norm_stderr;
  j["seconds"] = prog.seconds();
  std::printf("%s\n", j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace).c_str());
  std::fflush(stdout);
  std::fprintf(stderr, "eval mc: %s: n %lld, acc %.4f ± %.4f, acc_norm %.4f ± %.4f, %s weights, %.1f s\n",
               a.tasks.c_str(), static_cast<long long>(s.n), s.acc, s.acc_stderr, s.acc_norm, s.acc_norm_stderr,
               weight_dtype_name(m.dec->weights().dtype), prog.seconds());
  if (m.dec->expert_group()) std::fprintf(stderr, "eval mc: %s\n", expert_group_summary(*m.dec).c_str());
}

}  // namespace

void register_eval_command(CLI::App& app) {
  CLI::App* ev =
      app.add_subcommand("eval", "Evaluate a model: perplexity of a text, multiple-choice tasks (docs/eval.md)");
  ev->require_subcommand(1);

  auto p = std::make_shared<PplArgs>();
  CLI::App* ppl = ev->add_subcommand("ppl", "Perplexity and bits per byte of a text file (sliding window)");
  add_model_options(ppl, p->m);
  ppl->add_option("--text", p->text, "UTF-8 text file (tokenized whole, bos prepended)")->required();
  ppl->add_option("--window", p->window, "tokens per window (0: the model's max_position_embeddings)")
      ->capture_default_str();
  ppl->add_option("--stride", p->stride, "tokens between window starts (0: window / 2)")->capture_default_str();
  ppl->add_option("--max-tokens", p->max_tokens, "score only the first N tokens, bos included (0: all)")
      ->capture_default_str();
  ppl->callback([p] { run_ppl(*p); });

  auto m = std::make_shared<McArgs>();
  CLI::App* mc = ev->add_subcommand("mc", "Log-likelihood multiple choice (acc, acc_norm) over a JSONL task file");
  add_model_options(mc, m->m);
  mc->add_option("--tasks", m->tasks, "JSONL: {\"context\": str, \"choices\": [str, ...], \"gold\": int} per line")
      ->required();
  mc->add_option("--limit", m->limit, "score the first N questions only (0: all)")->capture_default_str();
  mc->add_option("--details", m->details, "also write one JSON line per question (log-likelihoods, predictions)");
  mc->callback([m] { run_mc(*m); });
}

}  // namespace moepp::cli
