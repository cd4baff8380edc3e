// log_prob: log softmax of one logits row at one index, in double.
#include "eval/log_prob.h"

#include <algorithm>
#include <cmath>
#include <string>

#include "core/error.h"

namespace moepp::eval {

double log_prob(const float* logits, int64_t V, int32_t target) {
  check(target >= 0 && target < V,
        "log_prob: token id " + std::to_string(target) + " outside the vocabulary [0, " + std::to_string(V) + ")");
  double mx = logits[0];
  for (int64_t i = 1; i < V; ++i) mx = std::max(mx, static_cast<double>(logits[i]));
  double sum = 0.0;
  for (int64_t i = 0; i < V; ++i) sum += std::exp(static_cast<double>(logits[i]) - mx);
  return static_cast<double>(logits[target]) - mx - std::log(sum);
}

}  // namespace moepp::eval
