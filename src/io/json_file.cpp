// read_json_file (see json_file.h).
#include "io/json_file.h"

#include "core/error.h"
#include "io/file.h"

namespace moepp::io {

nlohmann::json read_json_file(const std::string& path, const std::string& what) {
  const std::string text = read_file(path, what);
  try {
    return nlohmann::json::parse(text);
  } catch (const nlohmann::json::parse_error& e) {
    throw Error(path + ": invalid JSON: " + e.what());
  }
}

}  // namespace moepp::io
