// KvCache allocation and slot lengths (see kv_cache.h).
#include "infer/kv_cache.h"

#include <cstring>
#include <string>

#include "core/error.h"

namespace moepp {

KvCache::KvCache(int64_t n_layers, int64_t n_slots, int64_t max_len, int64_t kv_dim)
    : L_(n_layers), S_(n_slots), max_len_(max_len), kv_dim_(kv_dim) {
  check(n_layers > 0 && n_slots > 0 && max_len > 0 && kv_dim > 0,
        "KvCache: layers, slots, max_len and kv_dim must be > 0, got " + std::to_string(n_layers) + ", " +
            std::to_string(n_slots) + ", " + std::to_string(max_len) + ", " + std::to_string(kv_dim));
  const size_t n = static_cast<size_t>(L_) * S_ * max_len_ * kv_dim_;
  k_.assign(n, 0.0f);
  v_.assign(n, 0.0f);
  len_.assign(S_, 0);
}

void KvCache::set_length(int64_t slot, int64_t n) {
  check(slot >= 0 && slot < S_, "KvCache: slot " + std::to_string(slot) + " outside [0, " + std::to_string(S_) + ")");
  check(n >= 0 && n <= max_len_, "KvCache: length " + std::to_string(n) + " outside [0, " + std::to_string(max_len_) + "]");
  len_[slot] = n;
}

void KvCache::copy_slot(int64_t dst, int64_t src) {
  check(src >= 0 && src < S_ && dst >= 0 && dst < S_,
        "KvCache::copy_slot: slot " + std::to_string(src) + " or " + std::to_string(dst) + " outside [0, " +
            std::to_string(S_) + ")");
  const int64_t len = len_[src];
  if (dst != src) {
    for (int64_t l = 0; l < L_; ++l) {
      std::memcpy(k(l, dst), k(l, src), static_cast<size_t>(len * kv_dim_) * sizeof(float));
      std::memcpy(v(l, dst), v(l, src), static_cast<size_t>(len * kv_dim_) * sizeof(float));
    }
  }
  len_[dst] = len;
}

}  // namespace moepp
