// KvCache: the keys (after RoPE) and values of every layer for a fixed number of sequence slots, each
// holding up to max_len positions, in fp32 or bfloat16 (KvDType). Memory is allocated once, up front:
//   2 * n_layers * n_slots * n_kv_heads * max_len * head_dim * (4 or 2) bytes. A slot is reused after
// clear(). Each (layer, slot, kv head) holds its positions contiguously ([max_len, head_dim]), so that
// attention streams one head's keys and values from consecutive memory (a position-major layout puts
// every key of a head in another 4 KB page, and decode attention then waits on memory latency).
// A BF16 cache stores each value rounded to nearest even (as llama.cpp's default f16 cache rounds) and
// reads it back widened to fp32: attention then computes in fp32 on the rounded keys and values, with
// half the bytes to read per decoded token. Not thread-safe: one writer (the decoder's pass) at a time.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace moepp {

enum class KvDType { kF32, kBF16 };
const char* kv_dtype_name(KvDType d);  // "f32", "bf16"
inline size_t kv_dtype_bytes(KvDType d) { return d == KvDType::kBF16 ? 2 : 4; }  // bytes per stored value
// Parses "f32" or "bf16"; throws moepp::Error naming `who` and the accepted values otherwise.
KvDType parse_kv_dtype(const std::string& s, const std::string& who);

class KvCache {
 public:
  KvCache() = default;
  KvCache(int64_t n_layers, int64_t n_slots, int64_t max_len, int64_t n_kv_heads, int64_t head_dim,
          KvDType dtype = KvDType::kF32);

  int64_t n_layers() const { return L_; }
  int64_t n_slots() const { return S_; }
  int64_t max_len() const { return max_len_; }
  int64_t n_kv_heads() const { return H_; }
  int64_t head_dim() const { return hd_; }
  int64_t kv_dim() const { return H_ * hd_; }
  KvDType dtype() const { return dtype_; }
  size_t bytes() const { return (k_.size() + v_.size()) * sizeof(float) + (kb_.size() + vb_.size()) * sizeof(uint16_t); }

  // Positions filled in a slot (the next token goes to position length(slot)).
  int64_t length(int64_t slot) const { return len_.at(slot); }
  void set_length(int64_t slot, int64_t n);  // 0 <= n <= max_len; throws otherwise
  void clear(int64_t slot) { set_length(slot, 0); }
  // Copies slot src's filled positions (every layer) into slot dst, whose length becomes src's
  // (a shared prefix scored with several continuations). Throws on a slot out of range.
  void copy_slot(int64_t dst, int64_t src);

  // Stores n positions' keys and values k, v [n, kv_dim] (fp32, rows kv_dim apart, kv head h in columns
  // [h * head_dim, (h + 1) * head_dim)) of layer l at positions [pos0, pos0 + n) of the slot, rounded to
  // the cache's dtype. The length is not changed. The caller keeps pos0 + n <= max_len (the decoder
  // checks its batch first).
  void write(int64_t layer, int64_t slot, int64_t pos0, int64_t n, const float* k, const float* v);

  // Positions [0, n) of kv head h's keys (values) in layer l / slot as fp32 [n, head_dim]: for an F32
  // cache a pointer into the cache; for a BF16 cache they are widened into scratch (which must hold
  // n * head_dim floats) and scratch is returned.
  const float* keys(int64_t layer, int64_t slot, int64_t head, int64_t n, float* scratch) const;
  const float* values(int64_t layer, int64_t slot, int64_t head, int64_t n, float* scratch) const;

  // A BF16 cache's own storage of kv head h in layer l / slot: [max_len, head_dim] bit patterns, row p =
  // position p (for kernels that widen as they read). Null for an F32 cache.
  const uint16_t* bf16_keys(int64_t layer, int64_t slot, int64_t head) const {
    return kb_.empty() ? nullptr : kb_.data() + offset(layer, slot, head);
  }
  const uint16_t* bf16_values(int64_t layer, int64_t slot, int64_t head) const {
    return vb_.empty() ? nullptr : vb_.data() + offset(layer, slot, head);
  }

 private:
  size_t offset(int64_t layer, int64_t slot, int64_t head) const {
    return ((static_cast<size_t>(layer) * S_ + slot) * H_ + head) * static_cast<size_t>(max_len_ * hd_);
  }
  template <class T>
  void store(std::vector<T>& dst, int64_t layer, int64_t slot, int64_t pos0, int64_t n, const float* src);
  const float* read(const std::vector<float>& f32, const std::vector<uint16_t>& bf16, int64_t layer, int64_t slot,
                    int64_t head, int64_t n, float* scratch) const;
  int64_t L_ = 0, S_ = 0, max_len_ = 0, H_ = 0, hd_ = 0;
  KvDType dtype_ = KvDType::kF32;
  std::vector<float> k_, v_;        // F32 cache
  std::vector<uint16_t> kb_, vb_;   // BF16 cache (bit patterns)
  std::vector<int64_t> len_;
};

}  // namespace moepp
