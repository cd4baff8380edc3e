// Summary statistics the benchmarks report over repeated timings (one definition for all of them).
#pragma once

#include <vector>

#include <nlohmann/json.hpp>

namespace moepp {

// The median of v (the mean of the two middle values for an even count); 0 for an empty v.
double median(std::vector<double> v);

// {"median": ..., "min": ..., "max": ...} of v, as the benchmarks' JSON reports repeated timings and
// ratios. v must not be empty.
nlohmann::json median_range(const std::vector<double>& v);

}  // namespace moepp
