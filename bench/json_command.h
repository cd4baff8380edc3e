// run_json_command: runs a shell command (a benchmark's PyTorch baseline script) and reads the JSON
// object it prints last; how `moepp bench layer --torch` and `moepp bench train --torch` get their
// side-by-side figures.
#pragma once

#include <nlohmann/json.hpp>
#include <string>

namespace moepp {

// The object on the last stdout line of `cmd` that starts with '{' (earlier lines, e.g. progress, are
// skipped); null when the command cannot start, exits non-zero, or prints no such line that parses.
nlohmann::json run_json_command(const std::string& cmd);

}  // namespace moepp
