// `moepp analyze`: routing analysis of a checkpoint over a text file (docs/analysis.md). Writes
// OUTDIR/analysis.json, then draws the PNG plots with scripts/plot_analysis.py when Debian's
// /usr/bin/python3 has matplotlib (else prints the command to run).
#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "analysis/routing_stats.h"
#include "cli/commands.h"
#include "core/error.h"
#include "data/token_shards.h"
#include "infer/model_dir.h"
#include "model/checkpoint.h"
#include "tokenizer/tokenizer.h"

namespace moepp::cli {
namespace {

namespace fs = std::filesystem;

constexpr const char* kPython = "/usr/bin/python3";

// Runs argv[0] with the arguments (no shell); returns its exit status, or -1 when it could not run.
int run_program(const std::vector<std::string>& args, bool quiet) {
  std::vector<char*> argv;
  for (const std::string& s : args) argv.push_back(const_cast<char*>(s.c_str()));
  argv.push_back(nullptr);
  std::fflush(stdout);
  std::fflush(stderr);
  const pid_t pid = fork();
  if (pid < 0) return -1;
  if (pid == 0) {
    if (quiet) {
      const int fd = open("/dev/null", O_WRONLY);
      if (fd >= 0) {
        dup2(fd, 1);
        dup2(fd, 2);
      }
    }
    execv(argv[0], argv.data());
    _exit(127);
  }
  int status = 0;
  if (waitpid(pid, &status, 0) < 0) return -1;
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

void make_plots(const std::string& json_path, const std::string& out_dir) {
  const std::string script = (fs::path(MOEPP_SOURCE_DIR) / "scripts" / "plot_analysis.py").string();
  const std::string how = std::string(kPython) + " " + script + " " + json_path + " --out " + out_dir;
  if (!fs::exists(script)) {
    std::printf("plots: %s not found; run scripts/plot_analysis.py %s --out %s from a moepp checkout\n",
                script.c_str(), json_path.c_str(), out_dir.c_str());
    return;
  }
  if (!fs::exists(kPython) || run_program({kPython, "-c", "import matplotlib"}, /*quiet=*/true) != 0) {
    std::printf("plots: %s with matplotlib not found (apt-get install python3-matplotlib); then run:\n  %s\n",
                kPython, how.c_str());
    return;
  }
  const int rc = run_program({kPython, script, json_path, "--out", out_dir}, /*quiet=*/false);
  if (rc != 0) throw Error("analyze: plotting failed (exit " + std::to_string(rc) + "): " + how);
}

}  // namespace

void register_analyze_command(CLI::App& app) {
  struct Args {
    std::string model, text, out, tokenizer;
    int64_t max_tokens = 32768, seq_len = 0, top = 30, batch = 8, min_count = 10;
    int bins = 50;
    bool no_plots = false;
  };
  auto a = std::make_shared<Args>();
  CLI::App* sub = app.add_subcommand("analyze", "Routing analysis of a model over a text: FFN experts per token and "
                                                "score histograms with/without gating residual (docs/analysis.md)");
  sub->add_option("--model", a->model, "checkpoint directory, or a run directory (its latest checkpoint)")->required();
  sub->add_option("--text", a->text, "text file (documents separated by blank lines)")->required();
  sub->add_option("--out", a->out, "output directory (analysis.json and the PNG plots)")->required();
  sub->add_option("--max-tokens", a->max_tokens, "tokens of the text to run (<= 0: all)")->capture_default_str();
  sub->add_option("--seq-len", a->seq_len, "window length (0: the model's max_position_embeddings, at most 512)")
      ->capture_default_str();
  sub->add_option("--top", a->top, "length of the per-token lists")->capture_default_str();
  sub->add_option("--min-count", a->min_count, "occurrences a token needs for the most/fewest FFN experts lists")
      ->capture_default_str();
  sub->add_option("--batch", a->batch, "windows per forward pass")->capture_default_str();
  sub->add_option("--bins", a->bins, "histogram bins on [0, 1]")->capture_default_str();
  sub->add_option("--tokenizer", a->tokenizer, "SentencePiece model (default: the checkpoint's tokenizer.model)");
  sub->add_flag("--no-plots", a->no_plots, "write analysis.json only");
  sub->callback([a] {
    check(a->top >= 0, "analyze: --top must be >= 0");
    check(a->seq_len >= 0, "analyze: --seq-len must be >= 0");
    check(a->batch >= 1, "analyze: --batch must be >= 1");
    check(a->bins >= 1 && a->bins <= 10000, "analyze: --bins must be in [1, 10000]");
    check(fs::is_regular_file(a->text), "analyze: --text " + a->text + ": no such file");
    const ModelDir md = open_model_dir(a->model, a->tokenizer, "analyze");
    const std::string& dir = md.dir;
    const Tokenizer& tok = md.tok;
    auto [cfg, params] = load_model(dir);

    const std::vector<std::string> docs = data::read_text_documents(a->text);
    check(!docs.empty(), "analyze: " + a->text + ": the file holds no text");
    const std::vector<int32_t> tokens = analysis::document_tokens(tok, docs, cfg, a->max_tokens);
    check(!tokens.empty(), "analyze: " + a->text + ": the text gives no tokens");

    analysis::AnalyzeOptions opt;
    opt.seq_len = a->seq_len > 0 ? a->seq_len : std::min<int64_t>(cfg.max_pos, 512);
    opt.batch = a->batch;
    opt.bins = a->bins;
    const analysis::RoutingAnalysis r = analysis::analyze_routing(cfg, params, tokens, opt);
    nlohmann::json j = analysis::routing_json(r, cfg, &tok, a->top, a->min_count);
    j["model"]["path"] = dir;
    j["text"] = a->text;
    j["documents"] = docs.size();

    fs::create_directories(a->out);
    const std::string json_path = (fs::path(a->out) / "analysis.json").string();
    {
      std::ofstream f(json_path);
      check(static_cast<bool>(f), "analyze: " + json_path + ": cannot write");
      f << j.dump(1, ' ', false, nlohmann::json::error_handler_t::replace) << "\n";
      check(static_cast<bool>(f), "analyze: " + json_path + ": write failed");
    }
    std::printf("analyze: %lld tokens in %lld windows of <= %lld, loss %.4f nats/token\n",
                static_cast<long long>(r.tokens), static_cast<long long>(r.windows),
                static_cast<long long>(r.seq_len), r.loss);
    std::printf("FFN experts per token (mean %.3f of top-%lld):", r.stats.mean_ffn(),
                static_cast<long long>(cfg.moe.top_k));
    for (int64_t l = 0; l < r.stats.n_layers; ++l) std::printf(" %.3f", r.stats.mean_ffn(l));
    std::printf("\n");
    if (r.no_residual) {
      std::printf("without gating residual: mean %.3f, loss %.4f\n", r.no_residual->mean_ffn(), r.loss_no_residual);
    }
    std::printf("wrote %s\n", json_path.c_str());
    if (!a->no_plots) make_plots(json_path, a->out);
  });
}

}  // namespace moepp::cli
