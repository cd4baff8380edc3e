// ZipArchive: the central directory of a zip archive held in memory (a mapped file), as PyTorch
// checkpoints need it: stored (uncompressed) entries only, zip64 sizes and offsets, every field
// bounds-checked; and crc32_of, the zip CRC-32. Every fault (truncated or corrupt archive, multi-disk,
// encrypted or compressed entry, duplicate name, ...) is a moepp::Error whose message starts with the
// `source` the archive was opened with; nothing here reads out of bounds on bad input.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace moepp::io {

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

// True when `data` starts with a zip local file header signature (what every zip file, and so every
// torch.save checkpoint, begins with).
bool has_zip_signature(const uint8_t* data, size_t size);

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
  // Where the central directory is, as the end-of-central-directory record(s) say.
  struct CentralDirectory {
    uint64_t offset = 0;     // of its first record; also where the entries' data area ends
    uint64_t end = 0;        // offset + size, checked to lie before the end records
    uint64_t n_entries = 0;
  };

  // The constructor's phases, in order.
  size_t find_end_of_central_directory() const;             // offset of the classic record
  CentralDirectory read_end_of_central_directory(size_t eocd) const;  // classic or zip64
  // Parses the central directory record `i` at offset `p` into `e` (zip64 extra field and local header
  // included) and returns the offset of the next record.
  uint64_t read_central_entry(uint64_t i, uint64_t p, const CentralDirectory& cd, ZipEntry& e) const;
  void read_zip64_extra(const uint8_t* x, uint64_t xlen, const std::string& wname, ZipEntry& e,
                        uint64_t& disk_start) const;
  void check_local_header(uint64_t name_len, const CentralDirectory& cd, const std::string& wname,
                          ZipEntry& e) const;
  void add_entry(ZipEntry e);  // rejects a duplicate name

  [[noreturn]] void fail(const std::string& message) const;  // throws "<source>: message"

  const uint8_t* bytes_;
  size_t size_;
  std::string source_;
  std::vector<ZipEntry> entries_;
  std::map<std::string, size_t> index_;
};

uint32_t crc32_of(const uint8_t* data, size_t n);  // the zip CRC-32 (polynomial 0xEDB88320)

}  // namespace moepp::io
