// Crash points for the crash-safety tests: fault_point("name") kills the process with SIGKILL when the
// environment variable MOEPP_FAULT_POINT names that point ("name", or "name@N" for its N-th visit,
// counting from 1), so a test can stop a write exactly between two of its steps. Without the variable
// it does nothing (one getenv per process). The points are listed in docs/training.md ("Crash safety").
// Thread-safe.
#pragma once

#include <string>

namespace moepp {

void fault_point(const std::string& name);

}  // namespace moepp
