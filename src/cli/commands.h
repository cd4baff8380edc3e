// Registration of the CLI subcommands; each lives in its own file under cli/ (or bench/ for benchmarks).
// A subcommand's callback runs the job and throws moepp::Error on bad input.
#pragma once

#include <CLI/CLI.hpp>

#include "comm/comm.h"

namespace moepp::cli {

// The job's processes (comm/world.h): one process, or every rank under mpirun. Set by main before any
// subcommand runs.
Comm& job_comm();

void register_layer_command(CLI::App& app);  // moepp layer   (cli/layer_command.cpp)
void register_bench_command(CLI::App& app);  // moepp bench … (bench/bench_command.cpp)
void register_dump_command(CLI::App& app);   // moepp dump    (cli/dump_command.cpp)
void register_tokenizer_command(CLI::App& app);  // moepp tokenizer train|encode|decode (cli/tokenizer_command.cpp)
void register_data_command(CLI::App& app);       // moepp data tokenize|info (cli/data_command.cpp)

void register_train_command(CLI::App& app);      // moepp train, moepp generate (cli/train_command.cpp)
void register_analyze_command(CLI::App& app);    // moepp analyze (cli/analyze_command.cpp)
void register_generate_command(CLI::App& app);   // moepp generate (cli/generate_command.cpp)
void register_eval_command(CLI::App& app);       // moepp eval ppl|mc (cli/eval_command.cpp)
void register_serve_command(CLI::App& app);      // moepp serve (cli/serve_command.cpp)
void register_convert_command(CLI::App& app);    // moepp convert (cli/convert_command.cpp)

}  // namespace moepp::cli
