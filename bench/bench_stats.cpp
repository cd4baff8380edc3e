// Benchmark statistics (see bench_stats.h).
#include "bench_stats.h"

#include <algorithm>

namespace moepp {

double median(std::vector<double> v) {
  if (v.empty()) return 0.0;
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

nlohmann::json median_range(const std::vector<double>& v) {
  return nlohmann::json{{"median", median(v)}, {"min", *std::min_element(v.begin(), v.end())},
                        {"max", *std::max_element(v.begin(), v.end())}};
}

}  // namespace moepp
