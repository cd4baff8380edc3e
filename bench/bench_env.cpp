// bench_environment (see bench_env.h): git, /proc/cpuinfo, /proc/loadavg, the streaming prefetch setting, the Q4 kernel.
#include "bench_env.h"

#include <omp.h>

#include <cstdio>
#include <fstream>
#include <string>

#include "core/q4_blocks.h"
#include "core/stream_prefetch.h"

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

// "family F model M" from /proc/cpuinfo: tells apart machines whose model names are alike.
std::string cpu_family_model() {
  std::ifstream f("/proc/cpuinfo");
  std::string family, model;
  for (std::string line; std::getline(f, line) && (family.empty() || model.empty());) {
    const size_t colon = line.find(':');
    if (colon == std::string::npos || colon + 2 > line.size()) continue;
    if (line.rfind("cpu family", 0) == 0) family = line.substr(colon + 2);
    else if (line.rfind("model\t", 0) == 0 || line.rfind("model :", 0) == 0) model = line.substr(colon + 2);
  }
  return family.empty() || model.empty() ? "unknown" : "family " + family + " model " + model;
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
  static const std::string cpu = cpu_model(), family_model = cpu_family_model();
  return {{"commit", commit},
          {"cpu", cpu},
          {"cpu_family_model", family_model},
          {"threads", omp_get_max_threads()},
          {"load_avg_1m", load_average()},
          {"stream_prefetch", stream_prefetch_name(stream_prefetch())},
          {"q4_kernel", q4_kernel_name()}};
}

}  // namespace moepp
