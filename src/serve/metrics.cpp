// Prometheus text metrics of `moepp serve` (see metrics.h).
#include "serve/metrics.h"

#include <cstdio>

namespace moepp::serve {

namespace {

std::string num(double x, const char* format = "%.17g") {
  char buf[64];
  std::snprintf(buf, sizeof buf, format, x);
  return buf;
}

// A label value with \, " and newline escaped.
std::string label(const std::string& s) {
  std::string r;
  for (char c : s) {
    if (c == '\\' || c == '"') r += '\\';
    if (c == '\n') {
      r += "\\n";
      continue;
    }
    r += c;
  }
  return r;
}

void header(std::string& out, const std::string& name, const char* type, const std::string& help) {
  out += "# HELP " + name + " " + help + "\n# TYPE " + name + " " + type + "\n";
}

void scalar(std::string& out, const std::string& name, const char* type, const std::string& help, double v) {
  header(out, name, type, help);
  out += name + " " + num(v) + "\n";
}

}  // namespace

Histogram::Histogram(std::vector<double> bounds) : bounds_(std::move(bounds)), counts_(bounds_.size() + 1, 0) {}

void Histogram::observe(double x) {
  size_t i = 0;
  while (i < bounds_.size() && x > bounds_[i]) ++i;
  ++counts_[i];
  sum_ += x;
  ++count_;
}

std::string Histogram::render(const std::string& name, const std::string& help) const {
  std::string out;
  header(out, name, "histogram", help);
  uint64_t cum = 0;
  for (size_t i = 0; i < bounds_.size(); ++i) {
    cum += counts_[i];
    out += name + "_bucket{le=\"" + num(bounds_[i], "%g") + "\"} " + std::to_string(cum) + "\n";
  }
  out += name + "_bucket{le=\"+Inf\"} " + std::to_string(count_) + "\n";
  out += name + "_sum " + num(sum_) + "\n";
  out += name + "_count " + std::to_string(count_) + "\n";
  return out;
}

Metrics::Metrics()
    : latency_({0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300}),
      ttft_({0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30}) {}

void Metrics::http_response(const std::string& path, int status) {
  std::lock_guard<std::mutex> lk(mu_);
  ++http_[{path, status}];
}

void Metrics::request_finished(const std::string& reason, int64_t prompt_tokens, int64_t completion_tokens,
                               double latency_s, double ttft_s, bool had_token) {
  std::lock_guard<std::mutex> lk(mu_);
  ++finished_[reason];
  prompt_tokens_ += static_cast<uint64_t>(prompt_tokens);
  completion_tokens_ += static_cast<uint64_t>(completion_tokens);
  latency_.observe(latency_s);
  if (had_token) ttft_.observe(ttft_s);
}

void Metrics::client_disconnected() {
  std::lock_guard<std::mutex> lk(mu_);
  ++disconnects_;
}

void Metrics::connection_rejected() {
  std::lock_guard<std::mutex> lk(mu_);
  ++rejected_;
}

std::string Metrics::render(const EngineStats& e) const {
  std::lock_guard<std::mutex> lk(mu_);
  std::string out;
  header(out, "moepp_http_requests_total", "counter", "HTTP responses by path and status code.");
  for (const auto& [k, n] : http_)
    out += "moepp_http_requests_total{path=\"" + label(k.first) + "\",status=\"" + std::to_string(k.second) +
           "\"} " + std::to_string(n) + "\n";
  header(out, "moepp_requests_finished_total", "counter",
         "Generation requests finished, by reason (stop, length, cancelled, error).");
  for (const char* r : {"stop", "length", "cancelled", "error"}) {
    auto it = finished_.find(r);
    out += std::string("moepp_requests_finished_total{reason=\"") + r + "\"} " +
           std::to_string(it == finished_.end() ? 0 : it->second) + "\n";
  }
  scalar(out, "moepp_prompt_tokens_total", "counter", "Prompt tokens of finished requests.",
         static_cast<double>(prompt_tokens_));
  scalar(out, "moepp_generation_tokens_total", "counter", "Generated tokens of finished requests.",
         static_cast<double>(completion_tokens_));
  scalar(out, "moepp_client_disconnects_total", "counter", "Requests whose client went away (request cancelled).",
         static_cast<double>(disconnects_));
  scalar(out, "moepp_connections_rejected_total", "counter",
         "Connections answered 503 because too many were waiting for an HTTP worker.", static_cast<double>(rejected_));
  scalar(out, "moepp_engine_steps_total", "counter", "Batched forward passes of the engine.",
         static_cast<double>(e.steps));
  scalar(out, "moepp_active_slots", "gauge", "Sequence slots in use.", static_cast<double>(e.active));
  scalar(out, "moepp_slots", "gauge", "Sequence slots of the engine.", static_cast<double>(e.n_slots));
  scalar(out, "moepp_queue_length", "gauge", "Requests waiting for a slot.", static_cast<double>(e.waiting));
  scalar(out, "moepp_queue_capacity", "gauge", "Requests that may wait for a slot.",
         static_cast<double>(e.max_queue));
  scalar(out, "moepp_context_length", "gauge", "Positions per slot (prompt + completion).",
         static_cast<double>(e.max_len));
  out += latency_.render("moepp_request_latency_seconds", "Time from submission to the end of a request.");
  out += ttft_.render("moepp_time_to_first_token_seconds", "Time from submission to the first generated token.");
  return out;
}

}  // namespace moepp::serve
