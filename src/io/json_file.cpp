// read_json_file and parse_json_text (see json_file.h).
#include "io/json_file.h"

#include "core/error.h"
#include "io/file.h"

namespace moepp::io {

nlohmann::json read_json_file(const std::string& path, const std::string& what) {
  return parse_json_text(read_file(path, what), path);
}

nlohmann::json parse_json_text(const std::string& text, const std::string& source) {
  try {
    return nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {  // parse_error, and out_of_range for a number like 1e999
    throw Error(source + ": invalid JSON: " + e.what());
  }
}

}  // namespace moepp::io
