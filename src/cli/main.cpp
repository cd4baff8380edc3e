// moepp command line: one binary, one subcommand per job. Errors from bad input are printed as
// "moepp: error: ..." with exit code 1; CLI usage errors exit with CLI11's code. Under mpirun every
// rank runs the same command; an error on any rank is printed with its rank and ends every rank of
// the job (exit code 1), so that no rank waits forever in a collective.
#include <CLI/CLI.hpp>

#include <csignal>
#include <cstdio>
#include <exception>

#include <memory>
#include <string>

#include "core/gemm.h"
#include "cli/commands.h"
#include "comm/world.h"
#include "core/error.h"
#include "core/heap.h"

namespace moepp::cli {
namespace {
Comm* g_job = nullptr;
}  // namespace

Comm& job_comm() { return *g_job; }

}  // namespace moepp::cli

namespace {

// Prints the error; under mpirun, with the rank, and (job_wide false) ends the whole job: the other
// ranks may be waiting in a collective. A job-wide error was raised by every rank: each returns.
int fail(moepp::World& world, const char* what, bool job_wide = false) {
  if (world.distributed()) {
    std::fprintf(stderr, "moepp: error (rank %d of %d): %s\n", world.comm().rank(), world.comm().size(), what);
    std::fflush(stderr);
    if (!job_wide) world.comm().abort(1);
    return 1;
  }
  std::fprintf(stderr, "moepp: error: %s\n", what);
  return 1;
}

// The commands that split their work over the ranks of an mpirun job; any other would run N copies of
// the same job (and write the same files). train splits the batch and the FFN experts; generate, eval
// and serve split the FFN experts (--ep-size).
bool runs_on_many_processes(int argc, char** argv) {
  if (argc < 2) return false;
  const std::string cmd = argv[1];
  if (cmd == "train" || cmd == "generate" || cmd == "eval" || cmd == "serve") return true;
  return cmd == "bench" && argc >= 3 && std::string(argv[2]) == "ep";
}

}  // namespace

int main(int argc, char** argv) {
  moepp::keep_freed_memory_in_heap();
  // A write beyond the file-size limit (ulimit -f) fails with EFBIG and a clear error instead of
  // killing the process.
  std::signal(SIGXFSZ, SIG_IGN);
  std::unique_ptr<moepp::World> world;
  try {
    world = std::make_unique<moepp::World>(&argc, &argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "moepp: error: %s\n", e.what());
    return 1;
  }
  moepp::cli::g_job = &world->comm();
  if (world->distributed() && !runs_on_many_processes(argc, argv))
    return fail(*world, "under mpirun only `moepp train`, `generate`, `eval`, `serve` (with --ep-size) and `bench ep` "
                        "run; run other commands as one process", true);
  CLI::App app{"moepp: train, evaluate and serve MoE++ (zero-computation experts) models on CPU"};
  app.require_subcommand(1);
  moepp::cli::register_layer_command(app);
  moepp::cli::register_bench_command(app);
  moepp::cli::register_dump_command(app);
  moepp::cli::register_tokenizer_command(app);
  moepp::cli::register_data_command(app);
  moepp::cli::register_train_command(app);
  moepp::cli::register_analyze_command(app);
  moepp::cli::register_generate_command(app);
  moepp::cli::register_eval_command(app);
  moepp::cli::register_serve_command(app);
  moepp::cli::register_convert_command(app);
  try {
    moepp::gemm_bf16_native();  // reads and checks MOEPP_BF16_GEMM (core/gemm.h) before any work
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    const int code = app.exit(e);
    if (code != 0 && world->distributed()) world->comm().abort(code);
    return code;
  } catch (const moepp::JobWideError& e) {
    return fail(*world, e.what(), true);
  } catch (const std::exception& e) {
    return fail(*world, e.what());
  }
  return 0;
}
