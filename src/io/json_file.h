// Whole-file reads: read_file (bytes) and read_json_file (parsed: configs, trainer state). A missing or
// unreadable file, or invalid JSON, throws moepp::Error naming the path.
#pragma once

#include <string>

#include <nlohmann/json.hpp>

namespace moepp::io {

// `what` names the file's role in the messages: "PATH: cannot open WHAT: <reason>", "PATH: cannot read WHAT".
std::string read_file(const std::string& path, const std::string& what = "the file");

// read_file, then parsed ("PATH: invalid JSON: ..." on a parse error).
nlohmann::json read_json_file(const std::string& path, const std::string& what = "the file");

}  // namespace moepp::io
