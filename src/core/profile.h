// Section profiler: wall time per named section of the training step, for `moepp bench train --profile`.
// Off by default; when off a ProfileScope costs one relaxed atomic load. Sections are timed from serial
// code only (the step's parallel regions sit inside them), so the totals need no locking beyond the
// registry's mutex. Names must be string literals (the pointer is the key).
#pragma once

#include <chrono>
#include <string>
#include <utility>
#include <vector>

namespace moepp {

void set_profiling(bool on);
bool profiling();
void profile_reset();
void profile_add(const char* name, double ms);
// (name, total ms, calls), in order of first use.
struct ProfileEntry {
  std::string name;
  double ms = 0.0;
  long calls = 0;
};
std::vector<ProfileEntry> profile_entries();

class ProfileScope {
 public:
  explicit ProfileScope(const char* name) : name_(profiling() ? name : nullptr) {
    if (name_) t0_ = std::chrono::steady_clock::now();
  }
  ~ProfileScope() {
    if (name_)
      profile_add(name_, std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0_).count());
  }
  ProfileScope(const ProfileScope&) = delete;
  ProfileScope& operator=(const ProfileScope&) = delete;

 private:
  const char* name_;
  std::chrono::steady_clock::time_point t0_;
};

}  // namespace moepp
