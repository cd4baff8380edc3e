// llama-quantize / llama-bench as child processes (see llama_cpp_runner.h).
#include "llama_cpp_runner.h"

#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <sys/wait.h>

#include "core/error.h"

namespace moepp {
namespace {

std::string sq(const std::string& s) {  // single-quoted for /bin/sh
  std::string o = "'";
  for (char c : s) o += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return o + "'";
}

// Runs `cmd`; returns its stdout; throws when it cannot start or exits non-zero.
std::string run(const std::string& cmd, const std::string& what, const std::string& log_path) {
  FILE* f = popen(cmd.c_str(), "r");
  check(f != nullptr, what + ": cannot start");
  std::string out;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, f)) > 0) out.append(buf, n);
  const int st = pclose(f);
  check(st != -1 && WIFEXITED(st) && WEXITSTATUS(st) == 0,
        what + ": failed (exit status " + std::to_string(WIFEXITED(st) ? WEXITSTATUS(st) : -1) + "); see " + log_path);
  return out;
}

double number_field(const nlohmann::json& o, const char* key, const std::string& what) {
  check(o.is_object() && o.contains(key) && o[key].is_number(), what + ": result without a numeric '" + key + "'");
  return o[key].get<double>();
}

}  // namespace

void check_llama_binary(const std::string& path, const std::string& option) {
  check(::access(path.c_str(), X_OK) == 0 && !std::filesystem::is_directory(path),
        option + " " + path + ": not an executable file");
}

void llama_quantize(const std::string& quantize_bin, const std::string& in, const std::string& out,
                    const std::string& type, int threads, const std::string& log_path) {
  check_llama_binary(quantize_bin, "--llama-quantize");
  const std::string cmd = sq(quantize_bin) + " --pure " + sq(in) + " " + sq(out) + " " + sq(type) + " " +
                          std::to_string(threads) + " >" + sq(log_path) + " 2>&1";
  run(cmd, "llama-quantize " + type, log_path);
  std::error_code ec;
  check(std::filesystem::file_size(out, ec) > 0 && !ec, "llama-quantize " + type + ": wrote no " + out);
}

LlamaBenchResult llama_bench(const std::string& bench_bin, const std::string& model, int64_t prompt, int64_t gen,
                             int threads, int reps, const std::string& log_path) {
  check_llama_binary(bench_bin, "--llama-bench");
  const std::string cmd = sq(bench_bin) + " -m " + sq(model) + " -p " + std::to_string(prompt) + " -n " +
                          std::to_string(gen) + " -t " + std::to_string(threads) + " -r " + std::to_string(reps) +
                          " -o json 2>>" + sq(log_path);
  const std::string what = "llama-bench on " + model;
  const std::string out = run(cmd, what, log_path);
  const size_t start = out.find('[');
  check(start != std::string::npos, what + ": printed no JSON array");
  nlohmann::json arr;
  try {
    arr = nlohmann::json::parse(out.substr(start));
  } catch (const nlohmann::json::exception& e) {
    throw Error(what + ": its JSON does not parse: " + e.what());
  }
  check(arr.is_array(), what + ": its JSON is not an array");
  LlamaBenchResult r;
  for (const nlohmann::json& o : arr) {
    const double np = number_field(o, "n_prompt", what), ng = number_field(o, "n_gen", what);
    if (np == static_cast<double>(prompt) && ng == 0) {
      r.pp = o;
      r.pp_tps = number_field(o, "avg_ts", what);
    } else if (np == 0 && ng == static_cast<double>(gen)) {
      r.tg = o;
      r.tg_tps = number_field(o, "avg_ts", what);
    }
  }
  check(r.pp_tps > 0 && r.tg_tps > 0, what + ": no pp" + std::to_string(prompt) + " and tg" + std::to_string(gen) +
                                          " results with avg_ts > 0");
  return r;
}

}  // namespace moepp
