// PyTorch checkpoints (`torch.save(state_dict)`, the zip format of torch >= 1.6, as written for
// pytorch_model.bin and its shards), read natively with no Python:
//   * ZipArchive: the central directory of a zip held in memory (a mapped file). Stored (uncompressed)
//     entries only; zip64 sizes and offsets; every field bounds-checked.
//   * unpickle_state_dict: a RESTRICTED unpickler. It knows only the opcodes a state_dict of tensors
//     needs and only the globals torch writes for one (collections.OrderedDict,
//     torch._utils._rebuild_tensor_v2, torch._utils._rebuild_parameter[_with_state], and the storage
//     classes torch.{Float,Half,BFloat16,Int,Long}Storage). It never calls or imports anything: the
//     "globals" are names that the interpreter matches. Any other opcode or global is an error.
//   * TorchCheckpoint: one .bin file memory-mapped, its tensors described by (storage, offset, sizes,
//     strides) and read as fp32 (or handed out as a pointer into the mapping when contiguous).
// Every fault (truncated or corrupt zip, compressed entry, unknown opcode, disallowed global, storage
// too small for a view, ...) is a moepp::Error whose message names the file; nothing here reads out
// of bounds or crashes on bad input.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "io/mapped_file.h"
#include "io/safetensors.h"

namespace moepp::io {

// ---------------------------------------------------------------------------------------------------
// Zip (central directory)

struct ZipEntry {
  std::string name;
  uint16_t method = 0;         // 0 = stored; anything else is compressed
  uint16_t flags = 0;          // general purpose bit flags (bit 0: encrypted)
  uint32_t crc32 = 0;
  uint64_t size = 0;           // uncompressed size
  uint64_t compressed_size = 0;
  uint64_t header_offset = 0;  // of the local file header
  uint64_t data_offset = 0;    // first byte of the entry's data in the archive
};

// A zip archive held in memory (bytes must outlive the object). The constructor reads the end of
// central directory record (zip64 when the classic fields overflow), every central directory entry
// (zip64 extra fields) and every local header, and checks that each entry's data lies inside the
// archive. Duplicate names, multi-disk archives and encrypted entries are errors. `source` names the
// file in messages.
class ZipArchive {
 public:
  ZipArchive(const uint8_t* data, size_t size, const std::string& source);

  const std::vector<ZipEntry>& entries() const { return entries_; }
  const ZipEntry* find(const std::string& name) const;  // nullptr when absent
  // The bytes of a stored entry. Throws naming the entry when it is absent or compressed; with
  // verify_crc also checks its CRC-32.
  const uint8_t* data(const ZipEntry& e, bool verify_crc = false) const;
  const uint8_t* data(const std::string& name, bool verify_crc = false) const;

 private:
  const uint8_t* bytes_;
  size_t size_;
  std::string source_;
  std::vector<ZipEntry> entries_;
  std::map<std::string, size_t> index_;
};

uint32_t crc32_of(const uint8_t* data, size_t n);  // the zip CRC-32 (polynomial 0xEDB88320)

// ---------------------------------------------------------------------------------------------------
// Restricted unpickler

// A tensor of a state_dict as the pickle describes it: a view (offset, sizes, strides, in elements)
// of a storage, whose bytes are the archive entry <prefix>/data/<storage_key>.
struct TorchTensorRef {
  DType dtype = DType::kF32;       // the storage's element type
  std::string storage_key;
  int64_t storage_numel = 0;       // elements the pickle says the storage holds
  int64_t storage_offset = 0;
  std::vector<int64_t> shape, stride;
};

// Runs the restricted unpickler on `data` (the archive's data.pkl) and returns {name: tensor} of the
// state_dict it builds (a dict or OrderedDict of str -> tensor; a BUILD of OrderedDict attributes such
// as state_dict()._metadata is accepted and ignored). Checks: every opcode known and in bounds,
// protocol <= 5, globals whitelisted, storages (same key = same storage) consistent, views valid
// (sizes and strides of equal rank, non-negative, the view within storage_numel, no overflow), keys
// strings, values tensors, no duplicate keys. Errors: "<source>: unsupported pickle opcode 0x.. at
// offset N", "<source>: global X.Y is not allowed", ...
std::map<std::string, TorchTensorRef> unpickle_state_dict(const uint8_t* data, size_t size,
                                                          const std::string& source);

// ---------------------------------------------------------------------------------------------------
// One checkpoint file

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
