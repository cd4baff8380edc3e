// read_json_file: a whole JSON file read (io/file.h) and parsed (configs, trainer state). A missing or
// unreadable file, or invalid JSON, throws moepp::Error naming the path.
#pragma once

#include <string>

#include <nlohmann/json.hpp>

namespace moepp::io {

// io::read_file (`what` names the file's role in its messages), then parsed ("PATH: invalid JSON: ..."
// on a parse error).
nlohmann::json read_json_file(const std::string& path, const std::string& what = "the file");

}  // namespace moepp::io
