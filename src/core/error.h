// moepp::Error: the one exception type for bad input (files, configs, requests) and violated contracts.
// Messages name the file / field at fault; the CLI prints them and exits non-zero.
#pragma once

#include <stdexcept>
#include <string>

namespace moepp {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& what) : std::runtime_error(what) {}
};

// Throws moepp::Error(message) when cond is false.
inline void check(bool cond, const std::string& message) {
  if (!cond) throw Error(message);
}

}  // namespace moepp
