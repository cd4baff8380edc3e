// read_json_file: a whole JSON file read (io/file.h) and parsed (configs, trainer state); parse_json_text:
// the same parse of text in memory. A missing or unreadable file, or invalid JSON, throws moepp::Error
// naming the path.
#pragma once

#include <string>

#include <nlohmann/json.hpp>

namespace moepp::io {

// io::read_file (`what` names the file's role in its messages), then parse_json_text.
nlohmann::json read_json_file(const std::string& path, const std::string& what = "the file");
// JSON text already in memory; "SOURCE: invalid JSON: ..." on a parse error.
nlohmann::json parse_json_text(const std::string& text, const std::string& source);

}  // namespace moepp::io
