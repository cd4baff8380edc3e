// The user's llama.cpp binaries, driven by `moepp bench infer --llama-bench PATH`: llama-quantize
// (`--pure`, every matrix in the type named) and llama-bench (`-o json`), run as child processes
// through the shell with every argument single-quoted. Their output is outside input: a missing
// binary, a non-zero exit, or JSON without the expected fields is a moepp::Error naming the binary
// and what was missing. Nothing here builds or ships llama.cpp.
#pragma once

#include <cstdint>
#include <string>

#include <nlohmann/json.hpp>

namespace moepp {

// Throws moepp::Error "OPTION PATH: not an executable file" unless PATH is executable.
void check_llama_binary(const std::string& path, const std::string& option);

// `QUANTIZE --pure IN OUT TYPE THREADS` (TYPE e.g. Q8_0, Q4_0); its output goes to `log_path`.
void llama_quantize(const std::string& quantize_bin, const std::string& in, const std::string& out,
                    const std::string& type, int threads, const std::string& log_path);

struct LlamaBenchResult {
  double pp_tps = 0, tg_tps = 0;  // avg_ts of the prompt (n_gen 0) and generation (n_prompt 0) tests
  nlohmann::json pp, tg;          // the two result objects as llama-bench printed them
};

// `BENCH -m MODEL -p PROMPT -n GEN -t THREADS -r REPS -o json` (stderr to `log_path`).
LlamaBenchResult llama_bench(const std::string& bench_bin, const std::string& model, int64_t prompt, int64_t gen,
                             int threads, int reps, const std::string& log_path);

}  // namespace moepp
