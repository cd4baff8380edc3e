// ThreadGovernor (see thread_governor.h).
#include "infer/thread_governor.h"

#include <algorithm>
#include <string>

#include "core/error.h"

namespace moepp {

ThreadGovernor::ThreadGovernor(int high, int64_t probe_every)
    : high_(high), low_(std::max(1, high / 2)), probe_every_(probe_every), level_(high), next_(high) {
  check(high >= 1, "ThreadGovernor: high must be >= 1 (got " + std::to_string(high) + ")");
  check(probe_every >= 1, "ThreadGovernor: probe_every must be >= 1 (got " + std::to_string(probe_every) + ")");
}

void ThreadGovernor::record(double seconds, int64_t rows) {
  if (high_ == low_) return;  // one thread: nothing to choose
  if (rows != rows_) {        // another kind of step: compare afresh, at the level in use
    rows_ = rows;
    best_high_ = 0;
    last_ = 0;
    slow_steps_ = 0;
    if (next_ != level_) {  // a try interrupted: its time says nothing
      next_ = level_;
      return;
    }
  }
  if (next_ != level_) {  // the step was a try of the other level
    if (last_ > 0 && seconds < kSwitch * last_) {
      level_ = next_;
      ++switches_;
      best_high_ = level_ == high_ ? seconds : 0;
      last_ = seconds;
    }
    next_ = level_;
    since_try_ = 0;
    slow_steps_ = 0;
    return;
  }
  last_ = seconds;
  ++since_try_;
  bool try_other = false;
  if (level_ == high_) {
    best_high_ = best_high_ > 0 ? std::min(best_high_, seconds) : seconds;
    slow_steps_ = seconds > kSlowdown * best_high_ ? slow_steps_ + 1 : 0;
    // A slowdown, or contention there from the start (no slowdown to see): once after kFirstTry
    // steps, then every kHighTryFactor x probe_every steps.
    const bool early = !tried_early_ && since_try_ >= kFirstTry;
    try_other = slow_steps_ >= 2 || early || since_try_ >= kHighTryFactor * probe_every_;
    if (early) tried_early_ = true;
  } else {
    try_other = since_try_ >= probe_every_;
  }
  if (try_other) {
    next_ = other(level_);
    slow_steps_ = 0;
  }
}

}  // namespace moepp
