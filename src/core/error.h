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

// An error that every process of a multi-process job raises at the same point, having agreed on it
// (a bad --ep-size, configs that differ between ranks, a checkpoint write that failed on some rank):
// each rank prints it and exits normally, so that every rank's message is seen, instead of the first
// one ending the job (what any other Error does under mpirun). In one process it is an Error like any.
class JobWideError : public Error {
 public:
  explicit JobWideError(const std::string& what) : Error(what) {}
};

// Throws moepp::Error(message) when cond is false.
inline void check(bool cond, const std::string& message) {
  if (!cond) throw Error(message);
}

}  // namespace moepp
