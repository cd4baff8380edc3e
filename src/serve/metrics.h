// Metrics of `moepp serve` in the Prometheus text exposition format (GET /metrics; docs/serve.md):
// request counters by endpoint and status, finished requests by reason, token counters, client
// disconnects, connections turned away, latency and time-to-first-token histograms, and the engine's
// gauges (slots in use, queue length) read at scrape time. Thread-safe.
#pragma once

#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "infer/engine.h"

namespace moepp::serve {

// A cumulative histogram with fixed upper bounds (seconds).
class Histogram {
 public:
  explicit Histogram(std::vector<double> bounds);
  void observe(double x);
  // "# HELP/# TYPE" lines, then name_bucket{le=...}, name_sum, name_count.
  std::string render(const std::string& name, const std::string& help) const;

 private:
  std::vector<double> bounds_;
  std::vector<uint64_t> counts_;  // per bucket (not cumulative); last = +Inf
  double sum_ = 0;
  uint64_t count_ = 0;
};

class Metrics {
 public:
  Metrics();
  // One HTTP response written (any route, any status).
  void http_response(const std::string& path, int status);
  // One generation request ended (reason as FinishEvent::reason).
  void request_finished(const std::string& reason, int64_t prompt_tokens, int64_t completion_tokens,
                        double latency_s, double ttft_s, bool had_token);
  void client_disconnected();
  // One connection turned away because too many were waiting for a worker (503).
  void connection_rejected();
  // The whole exposition, with the engine's gauges.
  std::string render(const EngineStats& engine) const;

 private:
  mutable std::mutex mu_;
  std::map<std::pair<std::string, int>, uint64_t> http_;  // (path, status) -> count
  std::map<std::string, uint64_t> finished_;             // reason -> count
  uint64_t prompt_tokens_ = 0, completion_tokens_ = 0, disconnects_ = 0, rejected_ = 0;
  Histogram latency_, ttft_;
};

}  // namespace moepp::serve
