// read_json_file: reads and parses one JSON file (configs, trainer state); a missing file or invalid
// JSON throws moepp::Error naming the path.
#pragma once

#include <string>

#include <nlohmann/json.hpp>

namespace moepp::io {

// `what` names the file's role in the "cannot open" message (e.g. "the model config").
nlohmann::json read_json_file(const std::string& path, const std::string& what = "the file");

}  // namespace moepp::io
