// fnv1a: the 64-bit FNV-1a hash of bytes, for checking that processes see the same configs and weights
// (not for security: it is neither keyed nor collision-resistant against an adversary).
#pragma once

#include <cstddef>
#include <cstdint>

namespace moepp {

constexpr uint64_t kFnv1aStart = 14695981039346656037ull;

// The hash of bytes [n], continuing from h (kFnv1aStart for a new hash).
inline uint64_t fnv1a(const void* bytes, size_t n, uint64_t h = kFnv1aStart) {
  const auto* p = static_cast<const unsigned char*>(bytes);
  for (size_t i = 0; i < n; ++i) {
    h ^= p[i];
    h *= 1099511628211ull;
  }
  return h;
}

}  // namespace moepp
