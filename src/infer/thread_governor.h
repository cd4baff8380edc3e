// ThreadGovernor: chooses the OpenMP thread count for a run of similar steps (decoding), so that decode
// does not collapse when other processes take cores. Every matrix product of a step is its own
// parallel region; a thread that lost its core holds up the others at each barrier (measured on 2
// cores beside one busy process: 8-10x slower; README "Decode under CPU contention").
//
// Two levels: high (all threads) and low (half, at least 1). At high, one step at low is tried when
// two consecutive steps are slower than kSlowdown x the fastest step seen at high (since the last
// change), once after the first kFirstTry steps (contention present from the start shows no
// slowdown), and every kHighTryFactor x probe_every steps; at low, a step at high is tried every
// probe_every steps. A tried level is kept when its step took less than kSwitch x the step before
// it. A step of another row count than the last starts the comparison afresh (its time is not
// comparable). On a quiet machine this costs one step at low per kHighTryFactor x probe_every.
//
// The governor only decides; the caller sets the count (omp_set_num_threads, run_governed below) and
// times the step. Callers govern decode steps of few rows: their products split output rows over the
// threads and compute each output on one thread, so the bits do not depend on the thread count
// (test_thread_governor.cpp checks this at the benchmark model's width for every dtype); a library
// GEMM of many rows may split its sums by thread count. Not thread-safe: one stepping thread.
#pragma once

#include <omp.h>

#include <chrono>
#include <cstdint>
#include <utility>

namespace moepp {

class ThreadGovernor {
 public:
  static constexpr double kSlowdown = 3.0;  // a step this much slower than the best at high: contention
  static constexpr double kSwitch = 0.8;    // a tried level is kept when it took < kSwitch x the last step
  static constexpr int64_t kFirstTry = 8;       // steps at high before the one early try of low
  static constexpr int64_t kHighTryFactor = 8;  // at high, low is tried every kHighTryFactor x probe_every

  // high >= 1; probe_every >= 1.
  explicit ThreadGovernor(int high, int64_t probe_every = 128);

  // The thread count for the next step.
  int threads() const { return next_; }

  // The step just run with threads() threads over `rows` rows took `seconds`.
  void record(double seconds, int64_t rows);

  int high() const { return high_; }
  int low() const { return low_; }
  int64_t switches() const { return switches_; }  // level changes so far

 private:
  int other(int t) const { return t == high_ ? low_ : high_; }

  int high_, low_;
  int64_t probe_every_;
  int level_;        // the level in use between tries
  int next_;         // level_ or, for one step, the other level
  int64_t rows_ = -1;
  double best_high_ = 0;  // fastest step at high since the last change (0: none yet)
  double last_ = 0;       // the last step at level_ (0: none yet)
  int slow_steps_ = 0;
  int64_t since_try_ = 0;
  bool tried_early_ = false;
  int64_t switches_ = 0;
};

// Runs step() on the calling thread's OpenMP team: with g's thread count, timed and recorded, when
// `governed` (a decode step of `rows` rows); else with g->high() threads. g == nullptr: step() as is.
template <typename Step>
void run_governed(ThreadGovernor* g, bool governed, int64_t rows, Step&& step) {
  if (!g) {
    std::forward<Step>(step)();
    return;
  }
  omp_set_num_threads(governed ? g->threads() : g->high());
  const auto t0 = std::chrono::steady_clock::now();
  std::forward<Step>(step)();
  if (governed) g->record(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(), rows);
}

}  // namespace moepp
