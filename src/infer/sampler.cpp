// Sampler: repetition penalty, then greedy or temperature / top-k / top-p / min-p and a seeded draw
// (see sampler.h).
#include "infer/sampler.h"

#include <algorithm>
#include <cmath>
#include <unordered_set>

#include "core/error.h"

namespace moepp {

void SamplingParams::validate() const {
  check(std::isfinite(temperature) && temperature >= 0.0f, "temperature must be >= 0, got " + std::to_string(temperature));
  check(top_k >= 0, "top_k must be >= 0, got " + std::to_string(top_k));
  check(std::isfinite(top_p) && top_p > 0.0f && top_p <= 1.0f, "top_p must be in (0, 1], got " + std::to_string(top_p));
  check(std::isfinite(min_p) && min_p >= 0.0f && min_p <= 1.0f, "min_p must be in [0, 1], got " + std::to_string(min_p));
  check(std::isfinite(repetition_penalty) && repetition_penalty > 0.0f,
        "repetition_penalty must be > 0, got " + std::to_string(repetition_penalty));
  check(std::isfinite(presence_penalty) && presence_penalty >= -2.0f && presence_penalty <= 2.0f,
        "presence_penalty must be in [-2, 2], got " + std::to_string(presence_penalty));
  check(std::isfinite(frequency_penalty) && frequency_penalty >= -2.0f && frequency_penalty <= 2.0f,
        "frequency_penalty must be in [-2, 2], got " + std::to_string(frequency_penalty));
}

Sampler::Sampler(SamplingParams p) : p_(p), rng_(p.seed) { p_.validate(); }

int32_t Sampler::sample(float* logits, int64_t V, const std::vector<int32_t>& history, size_t n_prompt) {
  check(V > 0, "Sampler: empty vocabulary");
  if (p_.repetition_penalty != 1.0f) {
    std::unordered_set<int32_t> seen;
    for (int32_t t : history) {
      if (t < 0 || t >= V || !seen.insert(t).second) continue;
      float& x = logits[t];
      x = x > 0.0f ? x / p_.repetition_penalty : x * p_.repetition_penalty;
    }
  }
  if ((p_.presence_penalty != 0.0f || p_.frequency_penalty != 0.0f) && history.size() > n_prompt) {
    count_.assign(static_cast<size_t>(V), 0);
    for (size_t i = n_prompt; i < history.size(); ++i)
      if (history[i] >= 0 && history[i] < V) ++count_[history[i]];
    for (size_t i = n_prompt; i < history.size(); ++i) {
      const int32_t t = history[i];
      if (t < 0 || t >= V || count_[t] == 0) continue;
      logits[t] -= static_cast<float>(count_[t]) * p_.frequency_penalty + p_.presence_penalty;
      count_[t] = 0;  // once per distinct token
    }
  }
  if (p_.temperature == 0.0f) return static_cast<int32_t>(std::max_element(logits, logits + V) - logits);

  // Candidates sorted by logit (descending); top-k cuts the list first.
  cand_.resize(V);
  for (int64_t v = 0; v < V; ++v) cand_[v] = {logits[v], static_cast<int32_t>(v)};
  const auto by_logit = [](const std::pair<float, int32_t>& a, const std::pair<float, int32_t>& b) {
    return a.first > b.first || (a.first == b.first && a.second < b.second);
  };
  int64_t n = p_.top_k > 0 ? std::min<int64_t>(p_.top_k, V) : V;
  std::partial_sort(cand_.begin(), cand_.begin() + n, cand_.end(), by_logit);
  // Softmax at the temperature over the kept candidates (double for the sums).
  std::vector<double> prob(n);
  double sum = 0.0;
  for (int64_t i = 0; i < n; ++i) {
    prob[i] = std::exp(static_cast<double>(cand_[i].first - cand_[0].first) / p_.temperature);
    sum += prob[i];
  }
  for (double& q : prob) q /= sum;
  // top-p: the smallest prefix whose mass reaches top_p (at least one token).
  if (p_.top_p < 1.0f) {
    double acc = 0.0;
    int64_t keep = 0;
    while (keep < n) {
      acc += prob[keep++];
      if (acc >= p_.top_p) break;
    }
    n = keep;
  }
  // min-p: drop tokens below min_p times the most likely one.
  if (p_.min_p > 0.0f) {
    const double floor = p_.min_p * prob[0];
    int64_t keep = 1;
    while (keep < n && prob[keep] >= floor) ++keep;
    n = keep;
  }
  double mass = 0.0;
  for (int64_t i = 0; i < n; ++i) mass += prob[i];
  const double u = std::uniform_real_distribution<double>(0.0, mass)(rng_);
  double acc = 0.0;
  for (int64_t i = 0; i < n; ++i) {
    acc += prob[i];
    if (u < acc) return cand_[i].second;
  }
  return cand_[n - 1].second;
}

}  // namespace moepp

namespace moepp {

TokenLogprobs token_logprobs(const float* logits, int64_t V, int32_t token, int64_t k) {
  check(V > 0 && token >= 0 && token < V, "token_logprobs: token " + std::to_string(token) + " outside [0, " +
                                              std::to_string(V) + ")");
  const float mx = *std::max_element(logits, logits + V);
  double sum = 0.0;
  for (int64_t v = 0; v < V; ++v) sum += std::exp(static_cast<double>(logits[v]) - mx);
  const double lse = mx + std::log(sum);
  TokenLogprobs r;
  r.chosen = {token, static_cast<float>(logits[token] - lse)};
  k = std::clamp<int64_t>(k, 0, V);
  if (k == 0) return r;
  std::vector<int32_t> ids(static_cast<size_t>(V));
  for (int64_t v = 0; v < V; ++v) ids[v] = static_cast<int32_t>(v);
  std::partial_sort(ids.begin(), ids.begin() + k, ids.end(),
                    [&](int32_t a, int32_t b) { return logits[a] > logits[b] || (logits[a] == logits[b] && a < b); });
  for (int64_t i = 0; i < k; ++i) r.top.push_back({ids[i], static_cast<float>(logits[ids[i]] - lse)});
  return r;
}

}  // namespace moepp
