// run_json_command (see json_command.h): popen, read all of stdout, parse the last '{' line.
#include "json_command.h"

#include <cstdio>

namespace moepp {

nlohmann::json run_json_command(const std::string& cmd) {
  FILE* f = popen(cmd.c_str(), "r");
  if (!f) return {};
  std::string out;
  char buf[4096];
  while (fgets(buf, sizeof buf, f)) out += buf;
  if (pclose(f) != 0) return {};
  size_t last = std::string::npos;  // start of the last line that starts with '{'
  for (size_t pos = 0; pos < out.size();) {
    if (out[pos] == '{') last = pos;
    const size_t nl = out.find('\n', pos);
    if (nl == std::string::npos) break;
    pos = nl + 1;
  }
  if (last == std::string::npos) return {};
  try {
    return nlohmann::json::parse(out.substr(last, out.find('\n', last) - last));
  } catch (const nlohmann::json::exception&) {
    return {};
  }
}

}  // namespace moepp
