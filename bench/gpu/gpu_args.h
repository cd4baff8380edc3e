// The command lines of the GPU drivers (moepp_gpu_layer, moepp_gpu_bench): "--name value" options and
// "--flag" switches, each known name given at most once; anything else is a moepp::Error naming it; and
// the drivers' main (guarded_main: a message and exit 1 on any error).
// Header-only, for the two drivers (they are separate binaries from `moepp`, which parses with CLI11).
#pragma once

#include <cstdio>
#include <exception>
#include <map>
#include <set>
#include <string>

#include "core/error.h"

namespace moepp::gpu_cli {

class Args {
 public:
  // options: the names that take a value; flags: the names that do not. Throws moepp::Error.
  Args(int argc, char** argv, const std::set<std::string>& options, const std::set<std::string>& flags) {
    for (int i = 1; i < argc; ++i) {
      const std::string a = argv[i];
      if (flags.count(a)) {
        if (!flags_.insert(a).second) throw Error(a + " given twice");
      } else if (options.count(a)) {
        if (i + 1 >= argc) throw Error(a + " needs a value");
        if (!values_.emplace(a, argv[++i]).second) throw Error(a + " given twice");
      } else {
        throw Error("unknown argument '" + a + "'");
      }
    }
  }
  bool flag(const std::string& name) const { return flags_.count(name) != 0; }
  bool has(const std::string& name) const { return values_.count(name) != 0; }
  std::string get(const std::string& name, const std::string& fallback) const {
    auto it = values_.find(name);
    return it == values_.end() ? fallback : it->second;
  }
  std::string require(const std::string& name) const {
    auto it = values_.find(name);
    if (it == values_.end()) throw Error(name + " is required");
    return it->second;
  }
  // A whole number in [lo, hi]; throws naming the option otherwise.
  int64_t integer(const std::string& name, int64_t fallback, int64_t lo, int64_t hi) const {
    if (!has(name)) return fallback;
    const std::string s = get(name, "");
    size_t used = 0;
    long long v = 0;
    try {
      v = std::stoll(s, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    if (used != s.size() || s.empty() || v < lo || v > hi)
      throw Error(name + ": expected a whole number in [" + std::to_string(lo) + ", " + std::to_string(hi) + "], got '" +
                  s + "'");
    return v;
  }

 private:
  std::map<std::string, std::string> values_;
  std::set<std::string> flags_;
};

// A driver's main: run(argc, argv), or "<name>: <message>" on stderr and exit 1 for any exception.
inline int guarded_main(const char* name, int (*run)(int, char**), int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s: %s\n", name, e.what());
    return 1;
  }
}

}  // namespace moepp::gpu_cli
