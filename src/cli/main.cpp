// moepp command line: one binary, one subcommand per job. Errors from bad input are printed as
// "moepp: error: ..." with exit code 1; CLI usage errors exit with CLI11's code.
#include <CLI/CLI.hpp>

#include <cstdio>
#include <exception>

#include "cli/commands.h"
#include "core/error.h"
#include "core/heap.h"

int main(int argc, char** argv) {
  moepp::keep_freed_memory_in_heap();
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
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  } catch (const moepp::Error& e) {
    std::fprintf(stderr, "moepp: error: %s\n", e.what());
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "moepp: error: %s\n", e.what());
    return 1;
  }
  return 0;
}
