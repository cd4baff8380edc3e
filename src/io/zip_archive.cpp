// The zip central-directory reader (see zip_archive.h) and the zip CRC-32.
#include "io/zip_archive.h"

#include <array>
#include <cstring>
#include <utility>

#include "core/error.h"
#include "core/little_endian.h"
#include "io/quoted_name.h"

namespace moepp::io {
namespace {

constexpr uint32_t kLocalSig = 0x04034b50, kCentralSig = 0x02014b50, kEocdSig = 0x06054b50;
constexpr uint32_t kEocd64Sig = 0x06064b50, kLocator64Sig = 0x07064b50;
constexpr size_t kEocdSize = 22, kLocatorSize = 20, kEocd64Size = 56, kCentralSize = 46, kLocalSize = 30;

}  // namespace

// ---------------------------------------------------------------------------------------------------
// CRC-32

uint32_t crc32_of(const uint8_t* data, size_t n) {
  static const std::array<uint32_t, 256> table = [] {
    std::array<uint32_t, 256> t{};
    for (uint32_t i = 0; i < 256; ++i) {
      uint32_t c = i;
      for (int k = 0; k < 8; ++k) c = (c & 1u) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
      t[i] = c;
    }
    return t;
  }();
  uint32_t c = 0xFFFFFFFFu;
  for (size_t i = 0; i < n; ++i) c = table[(c ^ data[i]) & 0xFFu] ^ (c >> 8);
  return c ^ 0xFFFFFFFFu;
}

// ---------------------------------------------------------------------------------------------------
// Zip

bool has_zip_signature(const uint8_t* data, size_t size) {
  return data != nullptr && size >= 4 && load_le32(data) == kLocalSig;
}

void ZipArchive::fail(const std::string& message) const { throw Error(source_ + ": " + message); }

ZipArchive::ZipArchive(const uint8_t* data, size_t size, const std::string& source)
    : bytes_(data), size_(size), source_(source) {
  if (bytes_ == nullptr || size_ < kEocdSize)
    fail("not a zip archive (" + std::to_string(size_) + " bytes; truncated?)");
  const CentralDirectory cd = read_end_of_central_directory(find_end_of_central_directory());
  entries_.reserve(static_cast<size_t>(cd.n_entries));
  uint64_t p = cd.offset;
  for (uint64_t i = 0; i < cd.n_entries; ++i) {
    ZipEntry e;
    p = read_central_entry(i, p, cd, e);
    add_entry(std::move(e));
  }
}

// End of central directory: the last 22 + comment bytes (comment <= 65535 bytes, ending the file).
size_t ZipArchive::find_end_of_central_directory() const {
  const size_t lowest = size_ - kEocdSize > 0xFFFF ? size_ - kEocdSize - 0xFFFF : 0;
  for (size_t p = size_ - kEocdSize + 1; p-- > lowest;) {
    if (load_le32(bytes_ + p) == kEocdSig && p + kEocdSize + load_le16(bytes_ + p + 20) == size_) return p;
  }
  fail("no zip end-of-central-directory record: the file is truncated or not a zip archive");
}

ZipArchive::CentralDirectory ZipArchive::read_end_of_central_directory(size_t eocd) const {
  const uint8_t* e = bytes_ + eocd;
  uint64_t disk = load_le16(e + 4), cd_disk = load_le16(e + 6), n_disk = load_le16(e + 8), n_total = load_le16(e + 10);
  uint64_t cd_size = load_le32(e + 12), cd_off = load_le32(e + 16);
  uint64_t cd_limit = eocd;  // the central directory ends before this offset

  // Zip64: a locator right before the classic record points at the zip64 record.
  if (eocd >= kLocatorSize && load_le32(bytes_ + eocd - kLocatorSize) == kLocator64Sig) {
    const uint8_t* l = bytes_ + eocd - kLocatorSize;
    const uint64_t rec = load_le64(l + 8);
    if (load_le32(l + 4) != 0 || load_le32(l + 16) > 1) fail("multi-disk zip archives are not supported");
    if (rec > eocd - kLocatorSize || eocd - kLocatorSize - rec < kEocd64Size)
      fail("zip64 end-of-central-directory offset " + std::to_string(rec) + " is out of bounds");
    const uint8_t* z = bytes_ + rec;
    if (load_le32(z) != kEocd64Sig)
      fail("bad zip64 end-of-central-directory signature at offset " + std::to_string(rec));
    disk = load_le32(z + 16);
    cd_disk = load_le32(z + 20);
    n_disk = load_le64(z + 24);
    n_total = load_le64(z + 32);
    cd_size = load_le64(z + 40);
    cd_off = load_le64(z + 48);
    cd_limit = rec;
  } else if (n_total == 0xFFFF || cd_size == 0xFFFFFFFFu || cd_off == 0xFFFFFFFFu) {
    fail("zip end-of-central-directory needs a zip64 record, but there is none (truncated?)");
  }
  if (disk != 0 || cd_disk != 0 || n_disk != n_total) fail("multi-disk zip archives are not supported");
  CentralDirectory cd;
  cd.offset = cd_off;
  cd.n_entries = n_total;
  if (__builtin_add_overflow(cd_off, cd_size, &cd.end) || cd.end > cd_limit)
    fail("zip central directory (offset " + std::to_string(cd_off) + ", " + std::to_string(cd_size) +
         " bytes) is outside the file (truncated or corrupt?)");
  if (n_total > cd_size / kCentralSize)
    fail("zip central directory claims " + std::to_string(n_total) + " entries in " + std::to_string(cd_size) +
         " bytes");
  return cd;
}

uint64_t ZipArchive::read_central_entry(uint64_t i, uint64_t p, const CentralDirectory& cd, ZipEntry& ze) const {
  const std::string where = "zip central directory entry " + std::to_string(i);
  if (cd.end - p < kCentralSize) fail(where + " runs past the central directory");
  const uint8_t* c = bytes_ + p;
  if (load_le32(c) != kCentralSig) fail(where + ": bad signature at offset " + std::to_string(p));
  ze.flags = load_le16(c + 8);
  ze.method = load_le16(c + 10);
  ze.crc32 = load_le32(c + 16);
  ze.compressed_size = load_le32(c + 20);
  ze.size = load_le32(c + 24);
  const uint64_t nlen = load_le16(c + 28), xlen = load_le16(c + 30), clen = load_le16(c + 32);
  uint64_t disk_start = load_le16(c + 34);
  ze.header_offset = load_le32(c + 42);
  if (cd.end - p - kCentralSize < nlen + xlen + clen)
    fail(where + ": name or extra field runs past the central directory");
  ze.name.assign(reinterpret_cast<const char*>(c + kCentralSize), static_cast<size_t>(nlen));
  const std::string wname = "zip entry " + quoted_name(ze.name);

  read_zip64_extra(c + kCentralSize + nlen, xlen, wname, ze, disk_start);
  if (disk_start != 0) fail(wname + ": multi-disk zip archives are not supported");
  if (ze.flags & 1u) fail(wname + " is encrypted");
  check_local_header(nlen, cd, wname, ze);
  if (ze.method == 0 && ze.compressed_size != ze.size)
    fail(wname + ": stored entry with compressed size " + std::to_string(ze.compressed_size) + " != size " +
         std::to_string(ze.size));
  return p + kCentralSize + nlen + xlen + clen;
}

// Extra fields: (id, length, data)*; the zip64 one (0x0001) holds the 64-bit values of the fields that
// overflowed, in this order.
void ZipArchive::read_zip64_extra(const uint8_t* x, uint64_t xlen, const std::string& wname, ZipEntry& ze,
                                  uint64_t& disk_start) const {
  for (uint64_t k = 0; k < xlen;) {
    if (xlen - k < 4) fail(wname + ": malformed extra field");
    const uint16_t id = load_le16(x + k), len = load_le16(x + k + 2);
    if (xlen - k - 4 < len) fail(wname + ": extra field runs past its end");
    if (id == 0x0001) {
      const uint8_t* z = x + k + 4;
      uint64_t avail = len;
      auto take64 = [&](uint64_t* v) {
        if (avail < 8) fail(wname + ": zip64 extra field is too short");
        *v = load_le64(z);
        z += 8;
        avail -= 8;
      };
      if (ze.size == 0xFFFFFFFFu) take64(&ze.size);
      if (ze.compressed_size == 0xFFFFFFFFu) take64(&ze.compressed_size);
      if (ze.header_offset == 0xFFFFFFFFu) take64(&ze.header_offset);
      if (disk_start == 0xFFFF) {
        if (avail < 4) fail(wname + ": zip64 extra field is too short");
        disk_start = load_le32(z);
      }
    }
    k += 4 + len;
  }
}

// The local header: its name and extra field lengths give where the data starts. The entries' data
// area ends where the central directory begins.
void ZipArchive::check_local_header(uint64_t nlen, const CentralDirectory& cd, const std::string& wname,
                                    ZipEntry& ze) const {
  const uint64_t h = ze.header_offset;
  if (h > cd.offset || cd.offset - h < kLocalSize)
    fail(wname + ": local header offset " + std::to_string(h) + " is out of bounds");
  const uint8_t* lh = bytes_ + h;
  if (load_le32(lh) != kLocalSig) fail(wname + ": bad local header signature at offset " + std::to_string(h));
  const uint64_t lnlen = load_le16(lh + 26), lxlen = load_le16(lh + 28);
  if (cd.offset - h - kLocalSize < lnlen + lxlen) fail(wname + ": local header runs past the entry data area");
  if (lnlen != nlen || std::memcmp(lh + kLocalSize, ze.name.data(), static_cast<size_t>(nlen)) != 0)
    fail(wname + ": local header name differs from the central directory");
  ze.data_offset = h + kLocalSize + lnlen + lxlen;
  if (ze.compressed_size > cd.offset - ze.data_offset)
    fail(wname + ": data (" + std::to_string(ze.compressed_size) + " bytes at offset " +
         std::to_string(ze.data_offset) + ") runs past the entry data area (truncated or corrupt?)");
}

void ZipArchive::add_entry(ZipEntry e) {
  if (!index_.emplace(e.name, entries_.size()).second)
    fail("zip archive holds the entry " + quoted_name(e.name) + " twice");
  entries_.push_back(std::move(e));
}

const ZipEntry* ZipArchive::find(const std::string& name) const {
  auto it = index_.find(name);
  return it == index_.end() ? nullptr : &entries_[it->second];
}

const uint8_t* ZipArchive::data(const ZipEntry& e, bool verify_crc) const {
  if (e.method != 0)
    throw Error(source_ + ": zip entry " + quoted_name(e.name) + " is compressed (method " +
                std::to_string(e.method) +
                "); only stored (uncompressed) entries are supported, as torch.save writes them");
  const uint8_t* d = bytes_ + e.data_offset;
  if (verify_crc && crc32_of(d, static_cast<size_t>(e.size)) != e.crc32)
    throw Error(source_ + ": zip entry " + quoted_name(e.name) + " fails its CRC-32 check (corrupt file)");
  return d;
}

const uint8_t* ZipArchive::data(const std::string& name, bool verify_crc) const {
  const ZipEntry* e = find(name);
  if (!e) throw Error(source_ + ": zip archive has no entry " + quoted_name(name));
  return data(*e, verify_crc);
}

}  // namespace moepp::io
