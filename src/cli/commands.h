// Registration of the CLI subcommands; each lives in its own file under cli/ (or bench/ for benchmarks).
// A subcommand's callback runs the job and throws moepp::Error on bad input.
#pragma once

#include <CLI/CLI.hpp>

namespace moepp::cli {

void register_layer_command(CLI::App& app);  // moepp layer   (cli/layer_command.cpp)
void register_bench_command(CLI::App& app);  // moepp bench … (bench/bench_command.cpp)

}  // namespace moepp::cli
