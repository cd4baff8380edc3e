// Tests for io/gguf_writer: the exact header bytes of a small file (magic, version, counts, every KV
// type's encoding, tensor infos with reversed dimensions and aligned offsets), the file's padding and
// data, general.alignment, and the errors for malformed input (duplicate key or tensor, long name,
// wrong byte count, bad shape, bad alignment). tests/python/test_gguf_export.py reads whole exported
// files with an independent reader.
#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include "core/error.h"
#include "io/gguf_writer.h"
#include "test_util.h"

using moepp::Error;
using moepp::io::GgmlType;
using moepp::io::GgufWriter;

namespace {

std::string le32(uint32_t v) { return std::string(reinterpret_cast<const char*>(&v), 4); }
std::string le64(uint64_t v) { return std::string(reinterpret_cast<const char*>(&v), 8); }
std::string str(const std::string& s) { return le64(s.size()) + s; }

std::vector<uint8_t> bytes_of(const std::vector<float>& v) {
  std::vector<uint8_t> b(v.size() * 4);
  std::memcpy(b.data(), v.data(), b.size());
  return b;
}

}  // namespace

TEST(GgufWriter, HeaderBytesFollowTheFormat) {
  GgufWriter w;
  w.add_string("general.architecture", "llama");
  w.add_u32("llama.block_count", 7);
  w.add_f32("llama.rope.freq_base", 10000.0f);
  w.add_bool("tokenizer.ggml.add_bos_token", true);
  w.add_i32_array("a", {-1, 2});
  w.add_string_array("s", {"x", "yz"});
  w.add_tensor("t0", {2, 3}, GgmlType::kF32, bytes_of({1, 2, 3, 4, 5, 6}));  // 24 bytes
  w.add_tensor("t1", {3}, GgmlType::kBF16, std::vector<uint8_t>(6, 0xab));

  std::string want = "GGUF" + le32(3) + le64(2) + le64(6);
  want += str("general.architecture") + le32(8) + str("llama");
  want += str("llama.block_count") + le32(4) + le32(7);
  float f = 10000.0f;
  uint32_t fb;
  std::memcpy(&fb, &f, 4);
  want += str("llama.rope.freq_base") + le32(6) + le32(fb);
  want += str("tokenizer.ggml.add_bos_token") + le32(7) + std::string(1, '\x01');
  want += str("a") + le32(9) + le32(5) + le64(2) + le32(0xffffffffu) + le32(2);
  want += str("s") + le32(9) + le32(8) + le64(2) + str("x") + str("yz");
  want += str("t0") + le32(2) + le64(3) + le64(2) + le32(0) + le64(0);   // dims reversed: ne0 = 3
  want += str("t1") + le32(1) + le64(3) + le32(30) + le64(32);            // 24 bytes -> next at 32
  want.resize((want.size() + 31) / 32 * 32, '\0');
  EXPECT_EQ(w.header_bytes(), want);
  EXPECT_EQ(w.data_bytes(), 64u);  // 32 + 6, padded to 64

  const moepp::test::ScratchDir scratch("gguf_writer");
  const std::string path = scratch.path("header.gguf");
  w.write(path);
  const std::string file = moepp::test::read_bytes(path);
  ASSERT_EQ(file.size(), want.size() + 64);
  EXPECT_EQ(file.substr(0, want.size()), want);
  const std::vector<uint8_t> t0 = bytes_of({1, 2, 3, 4, 5, 6});
  EXPECT_EQ(file.substr(want.size(), 24), std::string(t0.begin(), t0.end()));
  EXPECT_EQ(file.substr(want.size() + 24, 8), std::string(8, '\0'));
  EXPECT_EQ(file.substr(want.size() + 32, 6), std::string(6, '\xab'));
  EXPECT_EQ(file.substr(want.size() + 38), std::string(26, '\0'));
}

TEST(GgufWriter, AlignmentKeyAndOffsets) {
  GgufWriter w;
  w.set_alignment(64);
  w.add_tensor("a", {5}, GgmlType::kF32, std::vector<uint8_t>(20));
  w.add_tensor("b", {1}, GgmlType::kF32, std::vector<uint8_t>(4));
  const std::string h = w.header_bytes();
  EXPECT_EQ(h.size() % 64, 0u);
  EXPECT_NE(h.find(str("general.alignment") + le32(4) + le32(64)), std::string::npos);
  EXPECT_NE(h.find(str("b") + le32(1) + le64(1) + le32(0) + le64(64)), std::string::npos);
  EXPECT_EQ(w.data_bytes(), 128u);
  EXPECT_THROW(w.set_alignment(32), Error);  // after a tensor
  GgufWriter v;
  EXPECT_THROW(v.set_alignment(48), Error);
  EXPECT_THROW(v.set_alignment(4), Error);
}

TEST(GgufWriter, RejectsMalformedInput) {
  GgufWriter w;
  w.add_u32("k", 1);
  EXPECT_THROW(w.add_string("k", "again"), Error);
  EXPECT_THROW(w.add_u32("", 1), Error);
  w.add_tensor("t", {2}, GgmlType::kF32, std::vector<uint8_t>(8));
  EXPECT_THROW(w.add_tensor("t", {2}, GgmlType::kF32, std::vector<uint8_t>(8)), Error);
  EXPECT_THROW(w.add_tensor(std::string(64, 'n'), {2}, GgmlType::kF32, std::vector<uint8_t>(8)), Error);
  EXPECT_NO_THROW(w.add_tensor(std::string(63, 'n'), {2}, GgmlType::kF32, std::vector<uint8_t>(8)));
  EXPECT_THROW(w.add_tensor("u", {2, 2}, GgmlType::kF32, std::vector<uint8_t>(8)), Error);
  EXPECT_THROW(w.add_tensor("u", {2, 2}, GgmlType::kBF16, std::vector<uint8_t>(16)), Error);
  EXPECT_THROW(w.add_tensor("u", {}, GgmlType::kF32, {}), Error);
  EXPECT_THROW(w.add_tensor("u", {0}, GgmlType::kF32, {}), Error);
  EXPECT_THROW(w.add_tensor("u", {1, 1, 1, 1, 1}, GgmlType::kF32, std::vector<uint8_t>(4)), Error);
  try {
    w.add_tensor("v", {3}, GgmlType::kF32, std::vector<uint8_t>(8));
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("'v'"), std::string::npos) << e.what();
  }
}
