// TorchCheckpoint: a PyTorch checkpoint (`torch.save(state_dict)`, the zip format of torch >= 1.6, as
// written for pytorch_model.bin and its shards), read natively with no Python: one .bin file
// memory-mapped, its zip archive read by io/zip_archive.h, its data.pkl by the restricted unpickler of
// io/unpickler.h, its tensors described by (storage, offset, sizes, strides) and read as fp32 (or handed
// out as a pointer into the mapping when contiguous).
// Every fault (truncated or corrupt zip, compressed entry, unknown opcode, disallowed global, storage
// too small for a view, ...) is a moepp::Error whose message names the file; nothing here reads out
// of bounds or crashes on bad input.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "io/mapped_file.h"
#include "io/unpickler.h"

namespace moepp::io {

// A memory-mapped PyTorch zip checkpoint. The archive holds <prefix>/data.pkl (the pickle),
// <prefix>/data/<key> (raw little-endian storages) and optionally <prefix>/byteorder (must be
// "little"); the prefix is the directory of the one data.pkl. On open every tensor's storage entry
// must exist, be stored, and hold at least storage_numel elements.
class TorchCheckpoint {
 public:
  explicit TorchCheckpoint(const std::string& path);  // throws moepp::Error naming path
  ~TorchCheckpoint();
  TorchCheckpoint(const TorchCheckpoint&) = delete;
  TorchCheckpoint& operator=(const TorchCheckpoint&) = delete;

  const std::string& path() const { return path_; }
  std::vector<std::string> names() const;  // sorted
  bool contains(const std::string& name) const { return tensors_.count(name) != 0; }
  const TorchTensorRef& info(const std::string& name) const;  // throws when absent

  // The tensor as fp32, row-major (numel(shape) floats), from F32, F16 or BF16 storage; non-contiguous
  // views are gathered through their strides.
  void read_f32(const std::string& name, float* out) const;
  // The first byte of the tensor in the mapping when the view is contiguous row-major, else nullptr.
  const uint8_t* mapped(const std::string& name) const;

 private:
  struct Entry {
    TorchTensorRef ref;
    const uint8_t* storage = nullptr;  // the storage's bytes in the mapping
  };
  std::string path_;
  FileMapping map_;
  std::map<std::string, Entry> tensors_;
  const Entry& entry(const std::string& name) const;
};

// True when a view with these sizes and strides is contiguous row-major (size-1 dimensions may have
// any stride; an empty view is contiguous).
bool is_contiguous(const std::vector<int64_t>& shape, const std::vector<int64_t>& stride);

}  // namespace moepp::io
