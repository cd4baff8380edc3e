// Fnv1a64: the 64-bit FNV-1a hash of a byte stream, for cheap "do these ranks hold the same bytes"
// checks (configs and weights at the start of a multi-process job). Not cryptographic.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>

namespace moepp {

class Fnv1a64 {
 public:
  void add(const void* data, size_t n) {
    const auto* p = static_cast<const unsigned char*>(data);
    uint64_t h = h_;
    for (size_t i = 0; i < n; ++i) {
      h ^= p[i];
      h *= 0x100000001b3ULL;
    }
    h_ = h;
  }
  void add(std::string_view s) { add(s.data(), s.size()); }
  uint64_t value() const { return h_; }

 private:
  uint64_t h_ = 0xcbf29ce484222325ULL;
};

}  // namespace moepp
