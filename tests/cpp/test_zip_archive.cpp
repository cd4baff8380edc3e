// Unit tests of io/zip_archive: archives whose records claim sizes, offsets or entry counts beyond
// the file are refused with an error naming the file before anything is sized from those claims
// (docs/limits.md); a valid archive's entries read back.
#include <gtest/gtest.h>

#include <cstring>
#include <string>

#include "core/error.h"
#include "io/zip_archive.h"
#include "test_util.h"
#include "torch_checkpoint_files.h"

using namespace moepp::io;
using namespace moepp::test;

namespace {

std::string zip_error(const std::string& z) {
  return error_message([&] { ZipArchive a(reinterpret_cast<const uint8_t*>(z.data()), z.size(), "z.bin"); });
}

void set32(std::string& s, size_t at, uint32_t v) { std::memcpy(s.data() + at, &v, 4); }
void set64(std::string& s, size_t at, uint64_t v) { std::memcpy(s.data() + at, &v, 8); }

const std::string kCentralSig = bytes("PK\x01\x02"), kEocdSig = bytes("PK\x05\x06"), kEocd64Sig = bytes("PK\x06\x06");

TEST(ZipArchive, ReadsEntries) {
  const std::string z = make_zip({{"a/data.pkl", "hello"}, {"a/data/0", "xyz"}});
  const ZipArchive a(reinterpret_cast<const uint8_t*>(z.data()), z.size(), "z.bin");
  ASSERT_EQ(a.entries().size(), 2u);
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(a.data("a/data.pkl", true)), 5), "hello");
}

TEST(ZipArchive, EntrySizeBeyondTheFile) {
  std::string z = make_zip({{"a/data.pkl", "hello"}});
  const size_t c = z.find(kCentralSig);
  set32(z, c + 20, 0x7FFFFFF0u);  // compressed size
  set32(z, c + 24, 0x7FFFFFF0u);  // size
  const std::string m = zip_error(z);
  EXPECT_NE(m.find("z.bin: zip entry 'a/data.pkl': data (2147483632 bytes"), std::string::npos) << m;
  EXPECT_NE(m.find("runs past the entry data area"), std::string::npos) << m;
}

TEST(ZipArchive, Zip64EntrySizeBeyondTheFile) {
  std::string z = make_zip({{"a/data.pkl", "hello"}}, /*zip64=*/true);
  const size_t c = z.find(kCentralSig);
  const size_t extra = c + 46 + std::strlen("a/data.pkl");  // the zip64 field: id, length, size, size, offset
  set64(z, extra + 4, uint64_t{1} << 60);
  set64(z, extra + 12, uint64_t{1} << 60);
  const std::string m = zip_error(z);
  EXPECT_NE(m.find("z.bin: zip entry 'a/data.pkl': data (1152921504606846976 bytes"), std::string::npos) << m;
}

TEST(ZipArchive, EntryCountBeyondTheCentralDirectory) {
  std::string z = make_zip({{"a/data.pkl", "hello"}}, /*zip64=*/true);
  const size_t r = z.find(kEocd64Sig);
  set64(z, r + 24, uint64_t{1} << 40);  // entries on this disk
  set64(z, r + 32, uint64_t{1} << 40);  // entries in all
  const std::string m = zip_error(z);
  EXPECT_NE(m.find("z.bin: zip central directory claims 1099511627776 entries in"), std::string::npos) << m;
}

TEST(ZipArchive, CentralDirectoryBeyondTheFile) {
  std::string z = make_zip({{"a/data.pkl", "hello"}});
  const size_t e = z.rfind(kEocdSig);
  set32(z, e + 12, 0xFFFFFF00u);  // central directory size
  const std::string m = zip_error(z);
  EXPECT_NE(m.find("z.bin: zip central directory"), std::string::npos) << m;
  EXPECT_NE(m.find("is outside the file"), std::string::npos) << m;
}

}  // namespace
