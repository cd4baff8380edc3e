// bench_environment (see bench_env.h): git, /proc/cpuinfo, /proc/loadavg.
#include "bench_env.h"

#include <omp.h>

#include <cstdio>
#include <fstream>
#include <string>

namespace moepp {
namespace {

std::string first_line_of_command(const std::string& cmd) {
  std::FILE* f = popen(cmd.c_str(), "r");
  if (!f) return "";
  char buf[256] = {0};
  const bool got = std::fgets(buf, sizeof buf, f) != nullptr;
  pclose(f);
  std::string s = got ? buf : "";
  while (!s.empty() && (s.back() == '\n' || s.back() == '\r')) s.pop_back();
  return s;
}

std::string cpu_model() {
  std::ifstream f("/proc/cpuinfo");
  for (std::string line; std::getline(f, line);)
    if (line.rfind("model name", 0) == 0) {
      const size_t colon = line.find(':');
      return colon == std::string::npos ? line : line.substr(colon + 2);
    }
  return "unknown";
}

double load_average() {
  std::ifstream f("/proc/loadavg");
  double v = -1.0;
  f >> v;
  return v;
}

}  // namespace

nlohmann::json bench_environment() {
  static const std::string commit = [] {
    const std::string c = first_line_of_command("git -C '" MOEPP_SOURCE_DIR "' describe --always --dirty 2>/dev/null");
    return c.empty() ? std::string("unknown") : c;
  }();
  static const std::string cpu = cpu_model();
  return {{"commit", commit}, {"cpu", cpu}, {"threads", omp_get_max_threads()}, {"load_avg_1m", load_average()}};
}

}  // namespace moepp
