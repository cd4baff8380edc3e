// Safetensors reading (memory-mapped, single files and shards with model.safetensors.index.json) and
// writing (atomic, through io::write_file_atomic of io/file.h). Format: 8-byte little-endian header
// length N, N bytes of JSON {name: {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__":
// {str: str}}, then the data buffer. Every malformed file gives a moepp::Error naming the file and the
// fault; nothing here crashes or reads out of bounds on bad input.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "core/tensor.h"
#include "io/dtype.h"

namespace moepp::io {

struct TensorInfo {
  DType dtype;
  std::vector<int64_t> shape;
  uint64_t begin = 0, end = 0;  // byte offsets into the data buffer
};

struct Header {
  std::map<std::string, TensorInfo> tensors;
  std::map<std::string, std::string> metadata;
  uint64_t data_start = 0;  // 8 + header length: where the data buffer starts in the file
};

// Parses and validates the header of a safetensors file held in `bytes` (the whole file, or at least
// its first 8 + N bytes; `file_size` is the size of the whole file). Checks: length field within the
// file, valid JSON object, known dtypes, integer non-negative shapes, offsets inside the data buffer,
// size = numel * dtype size, no overlaps. `source` names the file in messages. Throws moepp::Error.
Header parse_header(const uint8_t* bytes, size_t available, uint64_t file_size, const std::string& source);

// A read-only, memory-mapped safetensors file.
class SafetensorsFile {
 public:
  explicit SafetensorsFile(const std::string& path);  // throws moepp::Error
  ~SafetensorsFile();
  SafetensorsFile(const SafetensorsFile&) = delete;
  SafetensorsFile& operator=(const SafetensorsFile&) = delete;

  const std::string& path() const { return path_; }
  const Header& header() const { return header_; }
  bool contains(const std::string& name) const { return header_.tensors.count(name) != 0; }
  std::vector<std::string> names() const;            // sorted
  const TensorInfo& info(const std::string& name) const;  // throws if absent
  const uint8_t* raw(const std::string& name) const;      // pointer into the mapping

  // Converting reads (throw moepp::Error naming file and tensor on absence or unsupported dtype).
  Tensor read_f32(const std::string& name) const;                  // from F32, F16, BF16
  std::vector<int32_t> read_i32(const std::string& name) const;    // from I32, I64 (range-checked)

 private:
  std::string path_;
  Header header_;
  const uint8_t* map_ = nullptr;
  size_t map_size_ = 0;
};

// A model's weights: one safetensors file, or the shards listed by model.safetensors.index.json
// ({"metadata": {...}, "weight_map": {tensor: shard file}}). `path` is a .safetensors file, an index
// .json file, or a directory holding model.safetensors or model.safetensors.index.json.
class SafetensorsModel {
 public:
  explicit SafetensorsModel(const std::string& path);
  bool contains(const std::string& name) const;
  std::vector<std::string> names() const;  // sorted, all shards
  const TensorInfo& info(const std::string& name) const;
  Tensor read_f32(const std::string& name) const;
  std::vector<int32_t> read_i32(const std::string& name) const;
  const uint8_t* raw(const std::string& name) const;  // pointer into the shard's mapping

 private:
  std::string path_;  // as given to the constructor, for messages
  std::vector<std::unique_ptr<SafetensorsFile>> shards_;
  std::map<std::string, size_t> where_;  // tensor -> shard index
  const SafetensorsFile& shard_of(const std::string& name) const;
};

// Collects tensors and writes one safetensors file atomically (temp file + fsync + rename). add*()
// copies the bytes; add_lazy() only records how to make them, so that write() holds one lazy tensor at
// a time and a file larger than memory can be written (`moepp convert`).
class SafetensorsWriter {
 public:
  // Makes the bytes of a lazy tensor into `out` (exactly the bytes of its dtype and shape).
  using Fill = std::function<void(uint8_t* out)>;

  void add(const std::string& name, DType dtype, const std::vector<int64_t>& shape, const void* data,
           size_t nbytes);
  // A tensor whose bytes write() asks `fill` for when it reaches it, into a buffer the writer owns
  // (reused: the largest lazy tensor's size). Throws as add() on a bad or duplicate name or shape;
  // what fill throws ends write() (no file is left).
  void add_lazy(const std::string& name, DType dtype, const std::vector<int64_t>& shape, Fill fill);
  void add_f32(const std::string& name, const Tensor& t);                        // stored as F32
  // Stored as F32 without a copy: t must stay alive and unchanged until write() (a lazy tensor).
  void add_f32_ref(const std::string& name, const Tensor& t);
  void add_f32(const std::string& name, const std::vector<int64_t>& shape, const float* data);
  void add_bf16(const std::string& name, const Tensor& t);                       // rounded to nearest even
  void add_i32(const std::string& name, const std::vector<int64_t>& shape, const int32_t* data);
  void set_metadata(const std::string& key, const std::string& value);
  void write(const std::string& path) const;  // throws moepp::Error on I/O failure
  uint64_t data_bytes() const;                 // the tensors' bytes added so far (the file less its header)

 private:
  struct Entry {
    std::string name;
    DType dtype;
    std::vector<int64_t> shape;
    uint64_t nbytes = 0;
    std::vector<uint8_t> bytes;  // add*(): the copy
    Fill fill;                   // add_lazy(): how to make them
  };
  uint64_t checked_size(const std::string& name, DType dtype, const std::vector<int64_t>& shape);
  std::vector<Entry> entries_;
  std::set<std::string> names_;  // for the duplicate-name check in add()
  std::map<std::string, std::string> metadata_;
};

// The file name of shard i (0-based) of n: <prefix>-0000<i+1>-of-0000<n>.safetensors (Hugging Face's).
std::string shard_file_name(const std::string& prefix, size_t i, size_t n);

// Writes a shard index {"metadata": {"total_size": total_bytes}, "weight_map": {tensor: file}} at path,
// atomically. Throws moepp::Error on a name that is not valid UTF-8 or a failed write.
void write_safetensors_index(const std::string& path, const std::map<std::string, std::string>& weight_map,
                             uint64_t total_bytes);

// Writes sharded safetensors: shards of at most `max_shard_bytes` named
// model-0000i-of-0000n.safetensors plus model.safetensors.index.json, into directory `dir`.
void write_sharded(const std::string& dir, const std::vector<std::pair<std::string, Tensor>>& tensors,
                   size_t max_shard_bytes);

}  // namespace moepp::io
