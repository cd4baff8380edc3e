// Tensor: a dense, row-major fp32 array with a shape. The compute type of the whole engine;
// other dtypes exist only at the I/O boundary (io/safetensors.h converts).
#pragma once

#include <cstdint>
#include <numeric>
#include <string>
#include <vector>

#include "core/error.h"

namespace moepp {

struct Tensor {
  std::vector<int64_t> shape;
  std::vector<float> data;

  Tensor() = default;
  explicit Tensor(std::vector<int64_t> s, float fill = 0.0f) : shape(std::move(s)), data(numel_of(shape), fill) {}

  static size_t numel_of(const std::vector<int64_t>& s) {
    return static_cast<size_t>(std::accumulate(s.begin(), s.end(), int64_t{1}, std::multiplies<int64_t>()));
  }
  size_t numel() const { return data.size(); }
  int64_t dim(size_t i) const { return shape.at(i); }
  float* ptr() { return data.data(); }
  const float* ptr() const { return data.data(); }
  void zero() { std::fill(data.begin(), data.end(), 0.0f); }
  bool empty() const { return data.empty(); }
};

// Resizes t to `shape` reusing its storage: no reallocation when the element count does not grow;
// the contents are unspecified afterwards.
inline void ensure_shape(Tensor& t, std::vector<int64_t> shape) {
  t.data.resize(Tensor::numel_of(shape));
  t.shape = std::move(shape);
}

// "[2, 3]" for messages.
inline std::string shape_str(const std::vector<int64_t>& s) {
  std::string r = "[";
  for (size_t i = 0; i < s.size(); ++i) r += (i ? ", " : "") + std::to_string(s[i]);
  return r + "]";
}

}  // namespace moepp
