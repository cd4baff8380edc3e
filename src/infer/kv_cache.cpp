// KvCache allocation, slot lengths, and the fp32 / bf16 stores and reads (see kv_cache.h).
#include "infer/kv_cache.h"

#include <bit>
#include <cstring>
#include <string>

#include "core/error.h"
#include "core/half_float.h"

namespace moepp {

const char* kv_dtype_name(KvDType d) { return d == KvDType::kBF16 ? "bf16" : "f32"; }

KvDType parse_kv_dtype(const std::string& s, const std::string& who) {
  if (s == "f32") return KvDType::kF32;
  if (s == "bf16") return KvDType::kBF16;
  throw Error(who + ": KV cache dtype must be f32 or bf16, got '" + s + "'");
}

KvCache::KvCache(int64_t n_layers, int64_t n_slots, int64_t max_len, int64_t n_kv_heads, int64_t head_dim,
                 KvDType dtype)
    : L_(n_layers), S_(n_slots), max_len_(max_len), H_(n_kv_heads), hd_(head_dim), dtype_(dtype) {
  check(n_layers > 0 && n_slots > 0 && max_len > 0 && n_kv_heads > 0 && head_dim > 0,
        "KvCache: layers, slots, max_len, kv heads and head_dim must be > 0, got " + std::to_string(n_layers) + ", " +
            std::to_string(n_slots) + ", " + std::to_string(max_len) + ", " + std::to_string(n_kv_heads) + ", " +
            std::to_string(head_dim));
  const size_t n = static_cast<size_t>(L_) * S_ * H_ * max_len_ * hd_;
  if (dtype_ == KvDType::kBF16) {
    kb_.assign(n, 0);
    vb_.assign(n, 0);
  } else {
    k_.assign(n, 0.0f);
    v_.assign(n, 0.0f);
  }
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
  const size_t n = static_cast<size_t>(len * hd_);
  auto copy = [&](auto& store) {  // the filled positions of every (layer, kv head) of one storage
    for (int64_t l = 0; l < L_; ++l)
      for (int64_t h = 0; h < H_; ++h)
        std::memcpy(store.data() + offset(l, dst, h), store.data() + offset(l, src, h), n * sizeof(store[0]));
  };
  if (dst != src) {
    if (dtype_ == KvDType::kBF16) {
      copy(kb_);
      copy(vb_);
    } else {
      copy(k_);
      copy(v_);
    }
  }
  len_[dst] = len;
}

template <class T>
void KvCache::store(std::vector<T>& dst, int64_t layer, int64_t slot, int64_t pos0, int64_t n, const float* src) {
  for (int64_t h = 0; h < H_; ++h) {
    T* d = dst.data() + offset(layer, slot, h) + pos0 * hd_;
    for (int64_t p = 0; p < n; ++p) {
      const float* s = src + p * H_ * hd_ + h * hd_;
      if constexpr (sizeof(T) == sizeof(float)) {
        std::memcpy(d + p * hd_, s, static_cast<size_t>(hd_) * sizeof(float));
      } else {
        for (int64_t j = 0; j < hd_; ++j) d[p * hd_ + j] = f32_to_bf16(s[j]);
      }
    }
  }
}

void KvCache::write(int64_t layer, int64_t slot, int64_t pos0, int64_t n, const float* k, const float* v) {
  if (dtype_ == KvDType::kF32) {
    store(k_, layer, slot, pos0, n, k);
    store(v_, layer, slot, pos0, n, v);
  } else {
    store(kb_, layer, slot, pos0, n, k);
    store(vb_, layer, slot, pos0, n, v);
  }
}

const float* KvCache::read(const std::vector<float>& f32, const std::vector<uint16_t>& bf16, int64_t layer,
                           int64_t slot, int64_t head, int64_t n, float* scratch) const {
  const size_t at = offset(layer, slot, head);
  if (dtype_ == KvDType::kF32) return f32.data() + at;
  const uint16_t* src = bf16.data() + at;
  // Widening is exact (bf16_to_f32: the bits shifted up), written inline so that it vectorises.
  for (int64_t i = 0; i < n * hd_; ++i) scratch[i] = std::bit_cast<float>(static_cast<uint32_t>(src[i]) << 16);
  return scratch;
}

const float* KvCache::keys(int64_t layer, int64_t slot, int64_t head, int64_t n, float* scratch) const {
  return read(k_, kb_, layer, slot, head, n, scratch);
}

const float* KvCache::values(int64_t layer, int64_t slot, int64_t head, int64_t n, float* scratch) const {
  return read(v_, vb_, layer, slot, head, n, scratch);
}

}  // namespace moepp
