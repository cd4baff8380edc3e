// KvCache: the keys (after RoPE) and values of every layer for a fixed number of sequence slots, each
// holding up to max_len positions, in fp32. Memory is allocated once, up front:
//   2 * n_layers * n_slots * max_len * kv_dim * 4 bytes. A slot is reused after clear().
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace moepp {

class KvCache {
 public:
  KvCache() = default;
  KvCache(int64_t n_layers, int64_t n_slots, int64_t max_len, int64_t kv_dim);

  int64_t n_layers() const { return L_; }
  int64_t n_slots() const { return S_; }
  int64_t max_len() const { return max_len_; }
  int64_t kv_dim() const { return kv_dim_; }
  size_t bytes() const { return (k_.size() + v_.size()) * sizeof(float); }

  // Positions filled in a slot (the next token goes to position length(slot)).
  int64_t length(int64_t slot) const { return len_.at(slot); }
  void set_length(int64_t slot, int64_t n);  // 0 <= n <= max_len; throws otherwise
  void clear(int64_t slot) { set_length(slot, 0); }
  // Copies slot src's filled positions (every layer) into slot dst, whose length becomes src's
  // (a shared prefix scored with several continuations). Throws on a slot out of range.
  void copy_slot(int64_t dst, int64_t src);

  // [max_len, kv_dim] rows of one (layer, slot); row p = position p.
  float* k(int64_t layer, int64_t slot) { return k_.data() + offset(layer, slot); }
  float* v(int64_t layer, int64_t slot) { return v_.data() + offset(layer, slot); }
  const float* k(int64_t layer, int64_t slot) const { return k_.data() + offset(layer, slot); }
  const float* v(int64_t layer, int64_t slot) const { return v_.data() + offset(layer, slot); }

 private:
  size_t offset(int64_t layer, int64_t slot) const {
    return (static_cast<size_t>(layer) * S_ + slot) * static_cast<size_t>(max_len_ * kv_dim_);
  }
  int64_t L_ = 0, S_ = 0, max_len_ = 0, kv_dim_ = 0;
  std::vector<float> k_, v_;
  std::vector<int64_t> len_;
};

}  // namespace moepp
