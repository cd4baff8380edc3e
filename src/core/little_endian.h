// Little-endian integers in byte buffers, independent of the host's byte order and of alignment: the
// one definition the file formats share (safetensors' header length, token shard headers, zip records
// of PyTorch checkpoints).
#pragma once

#include <cstdint>

namespace moepp {

inline uint64_t load_le(const uint8_t* p, int n_bytes) {
  uint64_t v = 0;
  for (int i = 0; i < n_bytes; ++i) v |= static_cast<uint64_t>(p[i]) << (8 * i);
  return v;
}
inline uint16_t load_le16(const uint8_t* p) { return static_cast<uint16_t>(load_le(p, 2)); }
inline uint32_t load_le32(const uint8_t* p) { return static_cast<uint32_t>(load_le(p, 4)); }
inline uint64_t load_le64(const uint8_t* p) { return load_le(p, 8); }

inline void store_le(uint8_t* p, uint64_t v, int n_bytes) {
  for (int i = 0; i < n_bytes; ++i) p[i] = static_cast<uint8_t>(v >> (8 * i));
}
inline void store_le32(uint8_t* p, uint32_t v) { store_le(p, v, 4); }
inline void store_le64(uint8_t* p, uint64_t v) { store_le(p, v, 8); }

}  // namespace moepp
