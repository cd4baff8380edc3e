// GgufWriter: writes a GGUF file (version 3, ggml's documented model format: docs/gguf.md of the ggml
// and llama.cpp repositories): the header (magic "GGUF", version, tensor count, metadata count), the
// typed metadata key/value pairs, the tensor infos (name, ggml dimensions, ggml type, offset) and the
// tensor data, each tensor's data at an offset that is a multiple of the alignment (general.alignment,
// 32 unless set). Little-endian throughout. Only writing: moepp reads no GGUF file.
//
// Ownership: the writer owns the metadata and the tensor bytes it is given (moved in) until it is
// destroyed; write() writes them atomically (io/file.h) without copying them again. Not thread-safe.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace moepp::io {

// The value types of GGUF metadata (the numbering of the format).
enum class GgufType : uint32_t {
  kU8 = 0, kI8 = 1, kU16 = 2, kI16 = 3, kU32 = 4, kI32 = 5, kF32 = 6, kBool = 7,
  kString = 8, kArray = 9, kU64 = 10, kI64 = 11, kF64 = 12,
};

// The ggml tensor types this writer stores (the numbering of ggml's enum ggml_type).
enum class GgmlType : uint32_t { kF32 = 0, kF16 = 1, kBF16 = 30 };
const char* ggml_type_name(GgmlType t);
size_t ggml_type_size(GgmlType t);  // bytes per element

class GgufWriter {
 public:
  // Metadata. Keys are unique: adding a key twice throws moepp::Error naming it; an empty key or a key
  // over 65535 bytes throws too. Array values may be empty.
  void add_u32(const std::string& key, uint32_t v);
  void add_i32(const std::string& key, int32_t v);
  void add_u64(const std::string& key, uint64_t v);
  void add_f32(const std::string& key, float v);
  void add_bool(const std::string& key, bool v);
  void add_string(const std::string& key, const std::string& v);
  void add_string_array(const std::string& key, const std::vector<std::string>& v);
  void add_f32_array(const std::string& key, const std::vector<float>& v);
  void add_i32_array(const std::string& key, const std::vector<int32_t>& v);

  // A tensor. `shape` is in row-major order (PyTorch's: the last dimension varies fastest); GGUF
  // stores ggml's order (ne[0] fastest), so the dimensions are written reversed. `bytes` holds the
  // elements in row-major order in type `type` (numel x ggml_type_size bytes). Throws moepp::Error for
  // a duplicate name, a name of 64 bytes or more (ggml's limit), an empty or non-positive shape, more
  // than 4 dimensions, or a byte count that does not match.
  void add_tensor(const std::string& name, const std::vector<int64_t>& shape, GgmlType type,
                  std::vector<uint8_t> bytes);

  // Sets general.alignment (a power of two in [8, 4096]; also written as that key) before any tensor is
  // added. Default 32 (not written).
  void set_alignment(uint32_t a);
  uint32_t alignment() const { return alignment_; }

  // Everything before the first tensor's data: header, metadata, tensor infos, padding to the
  // alignment. (Tests read it; write() writes it followed by the aligned tensor data.)
  std::string header_bytes() const;
  // Writes the whole file atomically (io/file.h). Throws moepp::Error naming the file on failure.
  void write(const std::string& path) const;

  size_t tensor_count() const { return tensors_.size(); }
  uint64_t data_bytes() const;  // the tensor data section, padding included

 private:
  struct Tensor {
    std::string name;
    std::vector<int64_t> shape;
    GgmlType type;
    std::vector<uint8_t> bytes;
    uint64_t offset;  // within the data section
  };
  std::string kv_;  // serialised metadata pairs
  uint64_t kv_count_ = 0;
  std::vector<std::string> keys_;
  std::vector<Tensor> tensors_;
  uint32_t alignment_ = 32;
  uint64_t data_end_ = 0;  // end of the last tensor's bytes within the data section

  void begin_kv(const std::string& key, GgufType type);
};

}  // namespace moepp::io
