// Tests for io/safetensors: round trips of every dtype, sharded models, the writer's file layout,
// exact fp16/bf16 conversions (against independent references), and one test per malformed-file case
// (each must throw moepp::Error whose message names the file and the field / tensor at fault).
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <functional>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/half_float.h"
#include "core/tensor.h"
#include "io/file.h"
#include "io/safetensors.h"
#include "test_util.h"

namespace fs = std::filesystem;
using moepp::bf16_to_f32;
using moepp::Error;
using moepp::f16_to_f32;
using moepp::f32_to_bf16;
using moepp::f32_to_f16;
using moepp::Tensor;
using namespace moepp::io;
using namespace moepp::test;

namespace {

class Safetensors : public ScratchDirTest {
 protected:
  Safetensors() : ScratchDirTest("moepp_st") {}
};

// A safetensors file image: 8-byte little-endian length, the header text, `data_size` data bytes.
std::string image(const std::string& header, size_t data_size, uint64_t length_field) {
  std::string s(8, '\0');
  for (int i = 0; i < 8; ++i) s[i] = static_cast<char>((length_field >> (8 * i)) & 0xFF);
  s += header;
  s.append(data_size, '\x01');
  return s;
}
std::string image(const std::string& header, size_t data_size = 0) { return image(header, data_size, header.size()); }

// Runs f, expects a moepp::Error, returns its message ("" and a test failure otherwise).
std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  } catch (const std::exception& e) {
    ADD_FAILURE() << "expected moepp::Error, got another exception: " << e.what();
    return "";
  }
  ADD_FAILURE() << "expected moepp::Error, nothing was thrown";
  return "";
}

#define EXPECT_HAS(msg, sub) EXPECT_NE((msg).find(sub), std::string::npos) << "message: " << (msg) << "\nmissing: " << (sub)

bool same_bits(float a, float b) { return std::memcmp(&a, &b, 4) == 0; }
uint32_t bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}
float from_bits(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

}  // namespace

// ------------------------------------------------------------------------------------------------
// Round trips

TEST_F(Safetensors, RoundTripEveryDtype) {
  const std::vector<float> f32 = {1.5f, -2.25f, 0.0f, 3.0e-8f, 1.0e30f, -0.0f};
  const std::vector<uint16_t> f16 = {0x3C00, 0xC000, 0x0001, 0x7BFF, 0x8000, 0x7C00};  // 1, -2, 2^-24, 65504, -0, inf
  const std::vector<uint16_t> bf16 = {0x3F80, 0xC040, 0x0001, 0x7F7F, 0xFF80, 0x3E00};
  const std::vector<int32_t> i32 = {0, -1, 2147483647, -2147483647 - 1, 42, 7};
  const std::vector<int64_t> i64 = {0, -5, 2147483647, -2147483648LL, 123456, 9};

  SafetensorsWriter w;
  w.add("a.f32", DType::kF32, {2, 3}, f32.data(), f32.size() * 4);
  w.add("b.f16", DType::kF16, {6}, f16.data(), f16.size() * 2);
  w.add("c.bf16", DType::kBF16, {3, 2}, bf16.data(), bf16.size() * 2);
  w.add("d.i32", DType::kI32, {1, 6}, i32.data(), i32.size() * 4);
  w.add("e.i64", DType::kI64, {6, 1}, i64.data(), i64.size() * 8);
  w.add("f.empty", DType::kF32, {0, 4}, nullptr, 0);
  w.add("g.scalar", DType::kF32, {}, f32.data(), 4);
  w.set_metadata("format", "pt");
  w.set_metadata("note", "hello");
  const std::string p = path("all.safetensors");
  w.write(p);

  SafetensorsFile f(p);
  EXPECT_EQ(f.path(), p);
  EXPECT_EQ(f.names(), (std::vector<std::string>{"a.f32", "b.f16", "c.bf16", "d.i32", "e.i64", "f.empty", "g.scalar"}));
  EXPECT_EQ(f.header().metadata.at("format"), "pt");
  EXPECT_EQ(f.header().metadata.at("note"), "hello");
  EXPECT_TRUE(f.contains("a.f32"));
  EXPECT_FALSE(f.contains("zzz"));

  EXPECT_EQ(f.info("a.f32").dtype, DType::kF32);
  EXPECT_EQ(f.info("a.f32").shape, (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(std::memcmp(f.raw("a.f32"), f32.data(), 24), 0);
  EXPECT_EQ(std::memcmp(f.raw("b.f16"), f16.data(), 12), 0);
  EXPECT_EQ(std::memcmp(f.raw("c.bf16"), bf16.data(), 12), 0);
  EXPECT_EQ(std::memcmp(f.raw("d.i32"), i32.data(), 24), 0);
  EXPECT_EQ(std::memcmp(f.raw("e.i64"), i64.data(), 48), 0);

  Tensor t = f.read_f32("a.f32");
  EXPECT_EQ(t.shape, (std::vector<int64_t>{2, 3}));
  for (size_t i = 0; i < f32.size(); ++i) EXPECT_TRUE(same_bits(t.data[i], f32[i])) << i;
  t = f.read_f32("b.f16");
  for (size_t i = 0; i < f16.size(); ++i) EXPECT_TRUE(same_bits(t.data[i], f16_to_f32(f16[i]))) << i;
  EXPECT_EQ(t.data[0], 1.0f);
  EXPECT_EQ(t.data[3], 65504.0f);
  EXPECT_EQ(t.data[2], std::ldexp(1.0f, -24));
  t = f.read_f32("c.bf16");
  EXPECT_EQ(t.shape, (std::vector<int64_t>{3, 2}));
  for (size_t i = 0; i < bf16.size(); ++i) EXPECT_TRUE(same_bits(t.data[i], bf16_to_f32(bf16[i]))) << i;
  EXPECT_EQ(t.data[1], -3.0f);

  EXPECT_EQ(f.read_i32("d.i32"), i32);
  const std::vector<int32_t> from64 = f.read_i32("e.i64");
  ASSERT_EQ(from64.size(), i64.size());
  for (size_t i = 0; i < i64.size(); ++i) EXPECT_EQ(from64[i], i64[i]);

  t = f.read_f32("f.empty");
  EXPECT_EQ(t.shape, (std::vector<int64_t>{0, 4}));
  EXPECT_TRUE(t.data.empty());
  t = f.read_f32("g.scalar");
  EXPECT_TRUE(t.shape.empty());
  ASSERT_EQ(t.data.size(), 1u);
  EXPECT_EQ(t.data[0], 1.5f);
}

TEST_F(Safetensors, TypedAddersRoundTrip) {
  Tensor a({2, 2});
  a.data = {1.0f, 2.0f, 3.0f, 1.0f + std::ldexp(1.0f, -9)};  // the last is not representable in bf16
  const std::vector<float> b = {4.0f, 5.0f, 6.0f};
  const std::vector<int32_t> c = {-3, 4};
  SafetensorsWriter w;
  w.add_f32("a", a);
  w.add_f32("b", {3}, b.data());
  w.add_bf16("a_bf16", a);
  w.add_i32("c", {2, 1}, c.data());
  const std::string p = path("typed.safetensors");
  w.write(p);

  SafetensorsFile f(p);
  EXPECT_EQ(f.info("a").dtype, DType::kF32);
  EXPECT_EQ(f.read_f32("a").data, a.data);
  EXPECT_EQ(f.read_f32("b").data, b);
  EXPECT_EQ(f.info("a_bf16").dtype, DType::kBF16);
  EXPECT_EQ(f.read_f32("a_bf16").data, (std::vector<float>{1.0f, 2.0f, 3.0f, 1.0f}));
  EXPECT_EQ(f.info("c").shape, (std::vector<int64_t>{2, 1}));
  EXPECT_EQ(f.read_i32("c"), c);
}

TEST_F(Safetensors, EmptyFileWithNoTensors) {
  SafetensorsWriter w;
  const std::string p = path("empty.safetensors");
  w.write(p);
  SafetensorsFile f(p);
  EXPECT_TRUE(f.names().empty());
  EXPECT_EQ(f.header().data_start, fs::file_size(p));

  // An empty data section holding only zero-size tensors.
  write_bytes(path("zero.safetensors"),
       image(R"({"z":{"dtype":"F16","shape":[0],"data_offsets":[0,0]},"y":{"dtype":"I64","shape":[3,0],"data_offsets":[0,0]}})"));
  SafetensorsFile g(path("zero.safetensors"));
  EXPECT_TRUE(g.read_f32("z").data.empty());
  EXPECT_TRUE(g.read_i32("y").empty());
}

TEST_F(Safetensors, WriterLayout) {
  const std::vector<uint16_t> h = {1, 2, 3};
  const std::vector<float> f = {1, 2, 3};
  const std::vector<int64_t> l = {7};
  SafetensorsWriter w;
  w.add("zz_half", DType::kF16, {3}, h.data(), 6);
  w.add("mm_float", DType::kF32, {3}, f.data(), 12);
  w.add("aa_long", DType::kI64, {1}, l.data(), 8);
  w.set_metadata("k", "v");
  const std::string p = path("layout.safetensors");
  w.write(p);
  const std::string bytes = read_bytes(p);
  ASSERT_GE(bytes.size(), 8u);
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | static_cast<uint8_t>(bytes[i]);
  EXPECT_EQ(n % 8, 0u);
  ASSERT_LE(8 + n, bytes.size());
  const std::string header = bytes.substr(8, n);
  EXPECT_EQ(header.front(), '{');
  EXPECT_EQ(header[header.find_last_not_of(' ')], '}');  // padded with spaces only
  // Names appear sorted in the header text.
  const size_t pa = header.find("\"aa_long\""), pm = header.find("\"mm_float\""), pz = header.find("\"zz_half\"");
  ASSERT_NE(pa, std::string::npos);
  EXPECT_LT(pa, pm);
  EXPECT_LT(pm, pz);
  EXPECT_EQ(bytes.size(), 8 + n + 8 + 12 + 6);  // no gaps

  SafetensorsFile sf(p);
  EXPECT_EQ(sf.header().data_start % 8, 0u);
  // Contiguous, every tensor aligned to its element size.
  std::vector<std::pair<uint64_t, uint64_t>> spans;
  for (const auto& [name, info] : sf.header().tensors) {
    EXPECT_EQ(info.begin % dtype_size(info.dtype), 0u) << name;
    spans.emplace_back(info.begin, info.end);
  }
  std::sort(spans.begin(), spans.end());
  uint64_t at = 0;
  for (const auto& s : spans) {
    EXPECT_EQ(s.first, at);
    at = s.second;
  }
  EXPECT_EQ(at, 26u);
}

TEST_F(Safetensors, OverwriteIsAtomicAndLeavesNoTemp) {
  const std::string p = path("x.safetensors");
  const std::vector<float> v1 = {1}, v2 = {2, 3};
  SafetensorsWriter w1, w2;
  w1.add_f32("t", {1}, v1.data());
  w2.add_f32("t", {2}, v2.data());
  w1.write(p);
  w2.write(p);
  EXPECT_EQ(SafetensorsFile(p).read_f32("t").data, v2);
  size_t count = 0;
  for (const auto& e : fs::directory_iterator(dir())) (void)e, ++count;
  EXPECT_EQ(count, 1u);
}

// Lazy tensors: the same file as the bytes added eagerly, each made once when write() reaches it; a
// fill that throws leaves neither the file nor a temporary behind; their names and shapes are checked
// as add()'s.
TEST_F(Safetensors, LazyTensorsWriteTheSameFile) {
  const std::vector<float> a = {1.5f, -2.0f, 3.25f};
  const std::vector<int32_t> b = {7, 8};
  const std::vector<uint16_t> c = {0x3f80, 0x4000, 0x4040, 0x4080};
  SafetensorsWriter eager, lazy;
  eager.add_f32("a", {3}, a.data());
  eager.add_i32("b", {2}, b.data());
  eager.add("c", DType::kBF16, {2, 2}, c.data(), 8);
  int calls = 0;
  lazy.add_lazy("c", DType::kBF16, {2, 2}, [&](uint8_t* out) { ++calls, std::memcpy(out, c.data(), 8); });
  lazy.add_lazy("a", DType::kF32, {3}, [&](uint8_t* out) { ++calls, std::memcpy(out, a.data(), 12); });
  lazy.add("b", DType::kI32, {2}, b.data(), 8);  // eager and lazy mixed
  EXPECT_EQ(lazy.data_bytes(), 28u);
  EXPECT_EQ(calls, 0) << "made before write()";
  eager.write(path("eager.safetensors"));
  lazy.write(path("lazy.safetensors"));
  EXPECT_EQ(calls, 2);
  EXPECT_EQ(read_bytes(path("lazy.safetensors")), read_bytes(path("eager.safetensors")));
  // add_f32_ref: not copied, read at write().
  Tensor ta({3});
  ta.data = {9.0f, 9.0f, 9.0f};
  SafetensorsWriter ref;
  ref.add_f32_ref("a", ta);
  ref.add_i32("b", {2}, b.data());
  ref.add("c", DType::kBF16, {2, 2}, c.data(), 8);
  ta.data = a;  // changed after add_f32_ref, before write(): the file has the new values
  ref.write(path("ref.safetensors"));
  EXPECT_EQ(read_bytes(path("ref.safetensors")), read_bytes(path("eager.safetensors")));

  SafetensorsWriter failing;
  failing.add_f32("a", {3}, a.data());
  failing.add_lazy("z", DType::kF32, {1}, [](uint8_t*) { throw Error("source unreadable"); });
  EXPECT_HAS(error_of([&] { failing.write(path("failed.safetensors")); }), "source unreadable");
  size_t count = 0;
  for (const auto& e : fs::directory_iterator(dir())) (void)e, ++count;
  EXPECT_EQ(count, 3u) << "a file or temporary of the failed write stayed";

  EXPECT_HAS(error_of([&] { lazy.add_lazy("a", DType::kF32, {3}, [](uint8_t*) {}); }), "duplicate tensor name");
  EXPECT_HAS(error_of([&] { lazy.add_lazy("n", DType::kF32, {-1}, [](uint8_t*) {}); }), "invalid shape");
  EXPECT_HAS(error_of([&] { lazy.add_lazy("n", DType::kF32, {1}, nullptr); }), "no fill function");
}

// ------------------------------------------------------------------------------------------------
// Sharded models

TEST_F(Safetensors, ShardedRoundTrip) {
  std::vector<std::pair<std::string, Tensor>> ts;
  std::mt19937 rng(7);
  std::normal_distribution<float> nd;
  for (int i = 0; i < 5; ++i) {
    Tensor t({4, i + 1});
    for (auto& x : t.data) x = nd(rng);
    ts.emplace_back("layer." + std::to_string(i) + ".weight", t);
  }
  const std::string d = path("sharded");
  write_sharded(d, ts, 40);  // 16..80 bytes per tensor: several shards
  std::vector<std::string> shard_files;
  for (const auto& e : fs::directory_iterator(d))
    if (e.path().extension() == ".safetensors") shard_files.push_back(e.path().filename().string());
  std::sort(shard_files.begin(), shard_files.end());
  ASSERT_GE(shard_files.size(), 2u);
  const size_t n = shard_files.size();
  char last[64];
  std::snprintf(last, sizeof last, "model-%05zu-of-%05zu.safetensors", n, n);
  EXPECT_EQ(shard_files.front(), "model-00001-of-0000" + std::to_string(n) + ".safetensors");
  EXPECT_EQ(shard_files.back(), last);

  const nlohmann::json idx = nlohmann::json::parse(read_bytes(d + "/model.safetensors.index.json"));
  EXPECT_EQ(idx["metadata"]["total_size"].get<uint64_t>(), 4u * 4 * (1 + 2 + 3 + 4 + 5));
  EXPECT_EQ(idx["weight_map"].size(), 5u);
  EXPECT_EQ(idx["weight_map"]["layer.0.weight"], "model-00001-of-0000" + std::to_string(n) + ".safetensors");

  for (const std::string& src : {d, d + "/model.safetensors.index.json"}) {
    SafetensorsModel m(src);
    std::vector<std::string> expect;
    for (const auto& [name, t] : ts) expect.push_back(name);
    std::sort(expect.begin(), expect.end());
    EXPECT_EQ(m.names(), expect);
    for (const auto& [name, t] : ts) {
      ASSERT_TRUE(m.contains(name));
      EXPECT_EQ(m.info(name).shape, t.shape);
      const Tensor r = m.read_f32(name);
      EXPECT_EQ(r.shape, t.shape);
      EXPECT_EQ(r.data, t.data);
    }
    EXPECT_FALSE(m.contains("nope"));
    const std::string msg = error_of([&] { m.read_f32("nope"); });
    EXPECT_HAS(msg, "'nope'");
    EXPECT_HAS(msg, src);
  }
}

TEST_F(Safetensors, ShardedSingleShardAndBigTensor) {
  std::vector<std::pair<std::string, Tensor>> ts = {{"big", Tensor({100}, 1.0f)}, {"small", Tensor({2}, 2.0f)}};
  write_sharded(path("s1"), ts, 1 << 20);
  EXPECT_TRUE(fs::exists(path("s1/model-00001-of-00001.safetensors")));
  SafetensorsModel m1(path("s1"));
  EXPECT_EQ(m1.read_f32("small").data, (std::vector<float>{2.0f, 2.0f}));
  // A tensor larger than the limit gets a shard of its own.
  write_sharded(path("s2"), ts, 8);
  EXPECT_TRUE(fs::exists(path("s2/model-00002-of-00002.safetensors")));
  SafetensorsModel m2(path("s2"));
  EXPECT_EQ(m2.read_f32("big").data, std::vector<float>(100, 1.0f));
  // Duplicate names are refused.
  ts.emplace_back("big", Tensor({1}));
  EXPECT_HAS(error_of([&] { write_sharded(path("s3"), ts, 1 << 20); }), "'big'");
}

TEST_F(Safetensors, ModelFromSingleFileAndDirectory) {
  SafetensorsWriter w;
  const std::vector<int32_t> ids = {1, 2, 3};
  w.add_i32("ids", {3}, ids.data());
  fs::create_directories(path("m"));
  w.write(path("m/model.safetensors"));
  SafetensorsModel a(path("m"));
  SafetensorsModel b(path("m/model.safetensors"));
  EXPECT_EQ(a.read_i32("ids"), ids);
  EXPECT_EQ(b.read_i32("ids"), ids);
  EXPECT_EQ(b.names(), std::vector<std::string>{"ids"});
  EXPECT_EQ(b.info("ids").dtype, DType::kI32);
  EXPECT_HAS(error_of([&] { b.read_f32("missing"); }), "model.safetensors");
}

// ------------------------------------------------------------------------------------------------
// Conversions

namespace {

// Nearest-even reference: among candidate values lo < hi (as doubles, hi may be a stand-in for inf),
// which one does x round to?
bool round_up(double x, double lo, double hi, bool lo_even) {
  const double dl = x - lo, dh = hi - x;
  return dh < dl || (dh == dl && !lo_even);
}

uint16_t ref_bf16(float f) {
  const uint32_t u = bits(f);
  const uint16_t sign = static_cast<uint16_t>(u >> 16 & 0x8000);
  const double x = std::fabs(static_cast<double>(f));
  const uint16_t lo = static_cast<uint16_t>((u & 0x7FFFFFFF) >> 16);
  const double lov = bf16_to_f32(lo);
  if (lov == x) return sign | lo;
  const uint16_t hi = lo + 1;
  const double hiv = hi == 0x7F80 ? std::ldexp(1.0, 128) : static_cast<double>(bf16_to_f32(hi));
  return sign | (round_up(x, lov, hiv, (lo & 1) == 0) ? hi : lo);
}

const std::vector<double>& f16_values() {  // all non-negative finite fp16 values, by bit pattern
  static const std::vector<double> v = [] {
    std::vector<double> r;
    for (uint32_t h = 0; h <= 0x7BFF; ++h) {
      const int e = static_cast<int>(h >> 10), m = static_cast<int>(h & 0x3FF);
      r.push_back(e == 0 ? std::ldexp(m, -24) : std::ldexp(1024 + m, e - 25));
    }
    return r;
  }();
  return v;
}

uint16_t ref_f16(float f) {
  const uint16_t sign = static_cast<uint16_t>(bits(f) >> 16 & 0x8000);
  const double x = std::fabs(static_cast<double>(f));
  const auto& v = f16_values();
  if (x >= 65520.0) return sign | 0x7C00;
  const size_t i = static_cast<size_t>(std::upper_bound(v.begin(), v.end(), x) - v.begin()) - 1;  // v[i] <= x
  if (v[i] == x) return static_cast<uint16_t>(sign | i);
  const double hiv = i + 1 < v.size() ? v[i + 1] : 65536.0;
  const size_t r = round_up(x, v[i], hiv, (i & 1) == 0) ? i + 1 : i;
  return static_cast<uint16_t>(sign | r);
}

}  // namespace

TEST(SafetensorsConversions, Bf16KnownValues) {
  EXPECT_EQ(f32_to_bf16(1.0f), 0x3F80);
  EXPECT_EQ(f32_to_bf16(-2.0f), 0xC000);
  EXPECT_EQ(f32_to_bf16(0.0f), 0x0000);
  EXPECT_EQ(f32_to_bf16(-0.0f), 0x8000);
  EXPECT_EQ(bf16_to_f32(0x3F80), 1.0f);
  EXPECT_EQ(bf16_to_f32(0xC040), -3.0f);
  EXPECT_EQ(bf16_to_f32(0x4049), 3.140625f);
  // Rounding: halfway cases go to even, anything above halfway goes up.
  EXPECT_EQ(f32_to_bf16(1.0f + std::ldexp(1.0f, -8)), 0x3F80);        // tie, 0x3F80 even
  EXPECT_EQ(f32_to_bf16(1.0f + 3 * std::ldexp(1.0f, -8)), 0x3F82);    // tie, 0x3F82 even
  EXPECT_EQ(f32_to_bf16(from_bits(0x3F808001)), 0x3F81);              // just above the tie
  EXPECT_EQ(f32_to_bf16(from_bits(0x3F807FFF)), 0x3F80);              // just below the tie
  EXPECT_EQ(f32_to_bf16(3.14159265f), 0x4049);
  // Overflow, inf, NaN.
  EXPECT_EQ(f32_to_bf16(std::numeric_limits<float>::max()), 0x7F80);
  EXPECT_EQ(f32_to_bf16(std::numeric_limits<float>::infinity()), 0x7F80);
  EXPECT_EQ(f32_to_bf16(-std::numeric_limits<float>::infinity()), 0xFF80);
  EXPECT_TRUE(std::isinf(bf16_to_f32(0x7F80)));
  EXPECT_TRUE(std::isnan(bf16_to_f32(f32_to_bf16(std::numeric_limits<float>::quiet_NaN()))));
  EXPECT_TRUE(std::isnan(bf16_to_f32(f32_to_bf16(from_bits(0x7F800001)))));  // low-payload NaN must not become inf
  EXPECT_TRUE(std::isnan(bf16_to_f32(f32_to_bf16(from_bits(0xFFFFFFFF)))));
  // Subnormals.
  EXPECT_EQ(f32_to_bf16(from_bits(0x00010000)), 0x0001);
  EXPECT_EQ(bf16_to_f32(0x0001), from_bits(0x00010000));
}

TEST(SafetensorsConversions, Bf16ExhaustiveAndRandom) {
  for (uint32_t h = 0; h <= 0xFFFF; ++h) {
    const float f = bf16_to_f32(static_cast<uint16_t>(h));
    if (std::isnan(f)) {
      EXPECT_TRUE(std::isnan(bf16_to_f32(f32_to_bf16(f))));
      continue;
    }
    ASSERT_EQ(f32_to_bf16(f), h);
  }
  std::mt19937 rng(1);
  for (int i = 0; i < 2000000; ++i) {
    const float f = from_bits(static_cast<uint32_t>(rng()));
    if (std::isnan(f)) continue;
    ASSERT_EQ(f32_to_bf16(f), ref_bf16(f)) << std::hex << bits(f);
  }
}

TEST(SafetensorsConversions, F16KnownValues) {
  EXPECT_EQ(f32_to_f16(1.0f), 0x3C00);
  EXPECT_EQ(f32_to_f16(-2.0f), 0xC000);
  EXPECT_EQ(f32_to_f16(-0.0f), 0x8000);
  EXPECT_EQ(f32_to_f16(0.5f), 0x3800);
  EXPECT_EQ(f32_to_f16(65504.0f), 0x7BFF);
  EXPECT_EQ(f32_to_f16(65519.996f), 0x7BFF);
  EXPECT_EQ(f32_to_f16(65520.0f), 0x7C00);  // tie with 65536 rounds to even = inf
  EXPECT_EQ(f32_to_f16(1e10f), 0x7C00);
  EXPECT_EQ(f32_to_f16(-1e10f), 0xFC00);
  EXPECT_EQ(f32_to_f16(std::numeric_limits<float>::infinity()), 0x7C00);
  EXPECT_EQ(f32_to_f16(std::ldexp(1.0f, -14)), 0x0400);  // smallest normal
  EXPECT_EQ(f32_to_f16(std::ldexp(1.0f, -24)), 0x0001);  // smallest subnormal
  EXPECT_EQ(f32_to_f16(std::ldexp(1.0f, -25)), 0x0000);  // tie with 0: even
  EXPECT_EQ(f32_to_f16(std::nextafter(std::ldexp(1.0f, -25), 1.0f)), 0x0001);
  EXPECT_EQ(f32_to_f16(3 * std::ldexp(1.0f, -25)), 0x0002);  // tie between 1 and 2 ulps: even
  EXPECT_EQ(f32_to_f16(5 * std::ldexp(1.0f, -25)), 0x0002);  // tie between 2 and 3 ulps: even
  EXPECT_EQ(f32_to_f16(1.0f + std::ldexp(1.0f, -11)), 0x3C00);      // tie: even
  EXPECT_EQ(f32_to_f16(1.0f + 3 * std::ldexp(1.0f, -11)), 0x3C02);  // tie: even
  EXPECT_EQ(f32_to_f16(std::ldexp(1.0f, -30)), 0x0000);
  EXPECT_EQ(f32_to_f16(-std::ldexp(1.0f, -30)), 0x8000);
  EXPECT_EQ(f16_to_f32(0x3C00), 1.0f);
  EXPECT_EQ(f16_to_f32(0x7BFF), 65504.0f);
  EXPECT_EQ(f16_to_f32(0x0001), std::ldexp(1.0f, -24));
  EXPECT_EQ(f16_to_f32(0x83FF), -std::ldexp(1023.0f, -24));
  EXPECT_EQ(f16_to_f32(0x7C00), std::numeric_limits<float>::infinity());
  EXPECT_EQ(f16_to_f32(0xFC00), -std::numeric_limits<float>::infinity());
  EXPECT_TRUE(std::isnan(f16_to_f32(0x7E00)));
  EXPECT_TRUE(std::isnan(f16_to_f32(0x7C01)));
  EXPECT_TRUE(std::isnan(f16_to_f32(f32_to_f16(std::numeric_limits<float>::quiet_NaN()))));
  EXPECT_TRUE(std::isnan(f16_to_f32(f32_to_f16(from_bits(0x7F800001)))));  // low-payload NaN stays NaN
}

TEST(SafetensorsConversions, F16ExhaustiveAndRandom) {
  for (uint32_t h = 0; h <= 0xFFFF; ++h) {
    const float f = f16_to_f32(static_cast<uint16_t>(h));
    if (std::isnan(f)) {
      EXPECT_TRUE(std::isnan(f16_to_f32(f32_to_f16(f))));
      continue;
    }
    ASSERT_EQ(f32_to_f16(f), h);
    const uint32_t e = h >> 10 & 0x1F;
    if (e != 31) {
      ASSERT_EQ(static_cast<double>(f), (h & 0x8000 ? -1 : 1) * f16_values()[h & 0x7FFF]) << h;
    }
  }
  // Every midpoint between neighbouring fp16 values, and its two fp32 neighbours.
  const auto& v = f16_values();
  for (size_t i = 0; i + 1 < v.size(); ++i) {
    const float mid = static_cast<float>((v[i] + v[i + 1]) / 2);  // exact in fp32
    for (float x : {mid, std::nextafter(mid, 0.0f), std::nextafter(mid, 1e9f)}) {
      ASSERT_EQ(f32_to_f16(x), ref_f16(x)) << x;
      ASSERT_EQ(f32_to_f16(-x), ref_f16(-x)) << x;
    }
  }
  std::mt19937 rng(2);
  std::uniform_real_distribution<float> small(-70000.0f, 70000.0f);
  for (int i = 0; i < 1000000; ++i) {
    float f = from_bits(static_cast<uint32_t>(rng()));
    if (i % 2) f = small(rng) * std::ldexp(1.0f, -static_cast<int>(rng() % 40));
    if (std::isnan(f)) continue;
    ASSERT_EQ(f32_to_f16(f), ref_f16(f)) << std::hex << bits(f);
#ifdef __FLT16_MAX__
    const _Float16 hw = static_cast<_Float16>(f);
    uint16_t hb;
    std::memcpy(&hb, &hw, 2);
    ASSERT_EQ(f32_to_f16(f), hb) << std::hex << bits(f);
#endif
  }
}

TEST_F(Safetensors, BulkF16ReadMatchesScalar) {
  std::vector<uint16_t> all(65536 + 3);  // odd length: exercises any vector tail
  for (size_t i = 0; i < all.size(); ++i) all[i] = static_cast<uint16_t>(i);
  SafetensorsWriter w;
  w.add("x", DType::kF16, {static_cast<int64_t>(all.size())}, all.data(), all.size() * 2);
  w.write(path("f16.safetensors"));
  const Tensor t = SafetensorsFile(path("f16.safetensors")).read_f32("x");
  ASSERT_EQ(t.data.size(), all.size());
  for (size_t i = 0; i < all.size(); ++i) {
    const float s = f16_to_f32(all[i]);
    if (std::isnan(s)) {
      ASSERT_TRUE(std::isnan(t.data[i])) << i;
    } else {
      ASSERT_TRUE(same_bits(t.data[i], s)) << i;
    }
  }
}

// ------------------------------------------------------------------------------------------------
// Malformed files: every one gives a moepp::Error naming the file and the fault.

namespace {

const char* kGood = R"("w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]})";

// Writes `bytes` to a file, opens it, and returns the error message (checking it names the file).
std::string open_error(const std::string& p, const std::string& bytes) {
  write_bytes(p, bytes);
  const std::string msg = error_of([&] { SafetensorsFile f(p); });
  EXPECT_HAS(msg, p);
  // parse_header on the same bytes fails the same way.
  const std::string msg2 = error_of([&] {
    parse_header(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size(), bytes.size(), "src.safetensors");
  });
  EXPECT_HAS(msg2, "src.safetensors");
  return msg;
}

}  // namespace

TEST_F(Safetensors, BadShorterThan8Bytes) {
  EXPECT_HAS(open_error(path("a"), ""), "too short");
  EXPECT_HAS(open_error(path("b"), "\x05\x00\x00"), "too short");
  EXPECT_HAS(open_error(path("c"), std::string(7, '\0')), "too short");
}

TEST_F(Safetensors, BadHeaderLengthBeyondFile) {
  const std::string h = std::string("{") + kGood + "}";
  EXPECT_HAS(open_error(path("a"), image(h, 8, h.size() + 9)), "larger than the file");
  EXPECT_HAS(open_error(path("b"), image("", 0, 1)), "larger than the file");
  // The caller gave fewer bytes than the header needs.
  const std::string img = image(h, 8);
  const std::string msg = error_of([&] {
    parse_header(reinterpret_cast<const uint8_t*>(img.data()), 8 + h.size() - 1, img.size(), "partial");
  });
  EXPECT_HAS(msg, "partial");
  EXPECT_HAS(msg, "header length");
}

TEST_F(Safetensors, BadHeaderLengthAbsurd) {
  EXPECT_HAS(open_error(path("a"), image("{}", 0, 200ull * 1000 * 1000)), "absurd");
  EXPECT_HAS(open_error(path("b"), image("{}", 0, ~0ull)), "absurd");
}

TEST_F(Safetensors, BadJson) {
  EXPECT_HAS(open_error(path("a"), image(R"({"w":{"dtype":"F32",)")), "not valid JSON");
  EXPECT_HAS(open_error(path("b"), image(std::string("{}\0\0", 4))), "NUL byte");
  EXPECT_HAS(open_error(path("b2"), image(std::string("{}\0garbage", 10))), "NUL byte");
  EXPECT_HAS(open_error(path("c"), image("")), "not valid JSON");
  EXPECT_HAS(open_error(path("d"), image("{\"\xff\xfe\":1}")), "not valid JSON");  // invalid UTF-8
}

TEST_F(Safetensors, BadJsonNotAnObject) {
  EXPECT_HAS(open_error(path("a"), image("[1,2,3]")), "not a JSON object");
  EXPECT_HAS(open_error(path("b"), image("\"str\"")), "not a JSON object");
  EXPECT_HAS(open_error(path("c"), image("null")), "not a JSON object");
}

TEST_F(Safetensors, BadDuplicateKeysAndDeepNesting) {
  std::string m = open_error(path("a"), image(std::string("{") + kGood + "," + kGood + "}", 8));
  EXPECT_HAS(m, "'w'");
  EXPECT_HAS(m, "twice");
  m = open_error(path("b"), image(R"({"w":{"dtype":"F32","dtype":"F16","shape":[2],"data_offsets":[0,8]}})", 8));
  EXPECT_HAS(m, "'dtype'");
  std::string deep = R"({"w":)" + std::string(5000, '[') + std::string(5000, ']') + "}";
  EXPECT_HAS(open_error(path("c"), image(deep)), "nested too deeply");
}

TEST_F(Safetensors, BadEntryNotAnObject) {
  const std::string m = open_error(path("a"), image(R"({"w":[1,2]})"));
  EXPECT_HAS(m, "'w'");
  EXPECT_HAS(m, "not a JSON object");
}

TEST_F(Safetensors, BadMissingKey) {
  std::string m = open_error(path("a"), image(R"({"w":{"dtype":"F32","shape":[2]}})", 8));
  EXPECT_HAS(m, "'w'");
  EXPECT_HAS(m, "missing field 'data_offsets'");
  m = open_error(path("b"), image(R"({"v":{"shape":[2],"data_offsets":[0,8]}})", 8));
  EXPECT_HAS(m, "'v'");
  EXPECT_HAS(m, "missing field 'dtype'");
  m = open_error(path("c"), image(R"({"v":{"dtype":"F32","data_offsets":[0,8]}})", 8));
  EXPECT_HAS(m, "missing field 'shape'");
}

TEST_F(Safetensors, BadExtraKey) {
  const std::string m =
      open_error(path("a"), image(R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8],"foo":1}})", 8));
  EXPECT_HAS(m, "'w'");
  EXPECT_HAS(m, "unknown field 'foo'");
}

TEST_F(Safetensors, BadUnsupportedDtype) {
  for (const char* dt : {"F64", "U16", "I16", "BOOL", "f32", ""}) {
    const std::string h = std::string(R"({"w":{"dtype":")") + dt + R"(","shape":[1],"data_offsets":[0,8]}})";
    const std::string m = open_error(path(std::string("a") + dt), image(h, 8));
    EXPECT_HAS(m, "'w'");
    EXPECT_HAS(m, "unsupported dtype '" + std::string(dt) + "'");
  }
  const std::string m = open_error(path("b"), image(R"({"w":{"dtype":4,"shape":[1],"data_offsets":[0,4]}})", 4));
  EXPECT_HAS(m, "'dtype' is not a string");
}

TEST_F(Safetensors, BadShape) {
  for (const char* shape : {"3", "\"3\"", "[-1]", "[2.5]", "[1,\"2\"]", "[[1]]", "null", "[18446744073709551615]",
                            "[1e3]", "{}"}) {
    const std::string h = std::string(R"({"w":{"dtype":"F32","shape":)") + shape + R"(,"data_offsets":[0,4]}})";
    const std::string m = open_error(path("a"), image(h, 4));
    EXPECT_HAS(m, "'w'");
    EXPECT_HAS(m, "'shape'");
  }
}

TEST_F(Safetensors, BadDataOffsets) {
  for (const char* off : {"4", "[0]", "[0,4,8]", "[-4,0]", "[0,-4]", "[0.0,4]", "[\"0\",4]", "null", "[]"}) {
    const std::string h = std::string(R"({"w":{"dtype":"F32","shape":[1],"data_offsets":)") + off + "}}";
    const std::string m = open_error(path("a"), image(h, 4));
    EXPECT_HAS(m, "'w'");
    EXPECT_HAS(m, "'data_offsets'");
  }
  const std::string m = open_error(path("b"), image(R"({"w":{"dtype":"F32","shape":[0],"data_offsets":[8,4]}})", 8));
  EXPECT_HAS(m, "begin 8 > end 4");
}

TEST_F(Safetensors, BadOffsetsBeyondData) {
  std::string m = open_error(path("a"), image(R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})", 7));
  EXPECT_HAS(m, "'w'");
  EXPECT_HAS(m, "beyond the data buffer");
  m = open_error(path("b"),
                 image(R"({"w":{"dtype":"F32","shape":[0],"data_offsets":[18446744073709551615,18446744073709551615]}})"));
  EXPECT_HAS(m, "beyond the data buffer");
}

TEST_F(Safetensors, BadSizeMismatch) {
  const std::string m = open_error(path("a"), image(R"({"w":{"dtype":"BF16","shape":[2,3],"data_offsets":[0,8]}})", 8));
  EXPECT_HAS(m, "'w'");
  EXPECT_HAS(m, "needs 12");
}

TEST_F(Safetensors, BadSizeOverflow) {
  // 2^32 * 2^32 * 4 bytes overflows 64 bits; a naive product would wrap to 0 and match [0,0].
  std::string m = open_error(path("a"),
                             image(R"({"w":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,0]}})"));
  EXPECT_HAS(m, "'w'");
  EXPECT_HAS(m, "overflow");
  m = open_error(path("b"),
                 image(R"({"w":{"dtype":"I64","shape":[2305843009213693952],"data_offsets":[0,0]}})"));  // 2^61 * 8
  EXPECT_HAS(m, "overflow");
  // A zero dimension makes the tensor empty, whatever the others are.
  write_bytes(path("c"), image(R"({"w":{"dtype":"F32","shape":[4294967296,0,4294967296],"data_offsets":[0,0]}})"));
  EXPECT_EQ(SafetensorsFile(path("c")).info("w").shape[1], 0);
}

TEST_F(Safetensors, BadOverlap) {
  const std::string m = open_error(
      path("a"),
      image(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
            12));
  EXPECT_HAS(m, "'a'");
  EXPECT_HAS(m, "'b'");
  EXPECT_HAS(m, "overlaps");
  // Identical ranges overlap too; empty tensors overlap nothing; gaps are allowed.
  EXPECT_HAS(open_error(path("b"), image(R"({"a":{"dtype":"I32","shape":[1],"data_offsets":[0,4]},"b":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})", 4)),
             "overlaps");
  write_bytes(path("c"),
       image(R"({"a":{"dtype":"I32","shape":[1],"data_offsets":[0,4]},"e":{"dtype":"F32","shape":[0],"data_offsets":[2,2]},"g":{"dtype":"F16","shape":[1],"data_offsets":[6,8]}})",
             8));
  EXPECT_EQ(SafetensorsFile(path("c")).names().size(), 3u);
}

TEST_F(Safetensors, BadMetadata) {
  std::string m = open_error(path("a"), image(R"({"__metadata__":[1]})"));
  EXPECT_HAS(m, "'__metadata__' is not an object");
  m = open_error(path("b"), image(R"({"__metadata__":{"ok":"x","format":3}})"));
  EXPECT_HAS(m, "'__metadata__'");
  EXPECT_HAS(m, "'format'");
  write_bytes(path("c"), image(R"({"__metadata__":{"format":"pt"}})"));
  EXPECT_EQ(SafetensorsFile(path("c")).header().metadata.at("format"), "pt");
}

TEST_F(Safetensors, BadFileOpen) {
  std::string m = error_of([&] { SafetensorsFile f(path("does-not-exist.safetensors")); });
  EXPECT_HAS(m, "does-not-exist.safetensors");
  m = error_of([&] { SafetensorsFile f(dir().string()); });
  EXPECT_HAS(m, dir().string());
}

TEST_F(Safetensors, BadReads) {
  const std::vector<int64_t> big = {1, int64_t{1} << 31, -(int64_t{1} << 31) - 1};
  const std::vector<float> f = {1.0f};
  SafetensorsWriter w;
  w.add("big", DType::kI64, {3}, big.data(), 24);
  w.add_f32("f", {1}, f.data());
  const std::string p = path("r.safetensors");
  w.write(p);
  SafetensorsFile sf(p);
  std::string m = error_of([&] { sf.read_i32("big"); });
  EXPECT_HAS(m, p);
  EXPECT_HAS(m, "'big'");
  EXPECT_HAS(m, "element 1");
  m = error_of([&] { sf.read_i32("f"); });
  EXPECT_HAS(m, "'f'");
  EXPECT_HAS(m, "F32");
  m = error_of([&] { sf.read_f32("big"); });
  EXPECT_HAS(m, "'big'");
  EXPECT_HAS(m, "I64");
  m = error_of([&] { sf.info("nope"); });
  EXPECT_HAS(m, p);
  EXPECT_HAS(m, "'nope'");
  EXPECT_HAS(error_of([&] { sf.raw("nope"); }), "'nope'");
}

// ------------------------------------------------------------------------------------------------
// Writer errors

TEST_F(Safetensors, WriterErrors) {
  const std::vector<float> f = {1, 2};
  SafetensorsWriter w;
  w.add_f32("x", {2}, f.data());
  EXPECT_HAS(error_of([&] { w.add_f32("x", {2}, f.data()); }), "duplicate tensor name 'x'");
  EXPECT_HAS(error_of([&] { w.add("y", DType::kF32, {3}, f.data(), 8); }), "'y'");
  EXPECT_HAS(error_of([&] { w.add("y", DType::kF32, {-1}, f.data(), 8); }), "'y'");
  EXPECT_HAS(error_of([&] { w.add("__metadata__", DType::kF32, {2}, f.data(), 8); }), "__metadata__");
  Tensor bad({2});
  bad.data.resize(3);
  EXPECT_HAS(error_of([&] { w.add_f32("z", bad); }), "'z'");
  EXPECT_HAS(error_of([&] { w.add_bf16("z", bad); }), "'z'");
  // Invalid UTF-8 names cannot be written as JSON.
  SafetensorsWriter u;
  u.add_f32("bad\xff", {2}, f.data());
  EXPECT_HAS(error_of([&] { u.write(path("u.safetensors")); }), "UTF-8");
  EXPECT_FALSE(fs::exists(path("u.safetensors")));
}

TEST_F(Safetensors, AtomicWriteErrors) {
  const std::string missing = path("no/such/dir/out.safetensors");
  std::string m = error_of([&] { write_file_atomic(missing, "abc", 3); });
  EXPECT_HAS(m, missing);
  EXPECT_HAS(m, "No such file or directory");
  // rename onto a non-empty directory fails: the temp file must be removed.
  fs::create_directories(path("target/inner"));
  m = error_of([&] { write_file_atomic(path("target"), "abc", 3); });
  EXPECT_HAS(m, path("target"));
  for (const auto& e : fs::directory_iterator(dir()))
    EXPECT_EQ(e.path().filename().string().find(".tmp."), std::string::npos) << e.path();
  // Success path.
  write_file_atomic(path("ok.bin"), "abc", 3);
  EXPECT_EQ(read_bytes(path("ok.bin")), "abc");
  write_file_atomic(path("empty.bin"), nullptr, 0);
  EXPECT_EQ(fs::file_size(path("empty.bin")), 0u);
}

// ------------------------------------------------------------------------------------------------
// Model / index errors

TEST_F(Safetensors, ModelErrors) {
  std::string m = error_of([&] { SafetensorsModel x(path("nothing-here")); });
  EXPECT_HAS(m, "nothing-here");
  fs::create_directories(path("emptydir"));
  m = error_of([&] { SafetensorsModel x(path("emptydir")); });
  EXPECT_HAS(m, "emptydir");
  EXPECT_HAS(m, "model.safetensors");
}

TEST_F(Safetensors, IndexErrors) {
  const std::vector<float> f = {1, 2};
  SafetensorsWriter w;
  w.add_f32("a", {2}, f.data());
  w.write(path("shard1.safetensors"));
  const std::string idx = path("model.safetensors.index.json");
  auto index_error = [&](const std::string& text) {
    write_bytes(idx, text);
    std::string msg = error_of([&] { SafetensorsModel x(idx); });
    EXPECT_HAS(msg, idx);
    return msg;
  };
  EXPECT_HAS(index_error("{\"weight_map\": {"), "not valid JSON");
  EXPECT_HAS(index_error("[]"), "not a JSON object");
  EXPECT_HAS(index_error("{}"), "'weight_map'");
  EXPECT_HAS(index_error(R"({"weight_map": []})"), "'weight_map'");
  EXPECT_HAS(index_error(R"({"metadata": 3, "weight_map": {}})"), "'metadata'");
  std::string m = index_error(R"({"weight_map": {"a": 5}})");
  EXPECT_HAS(m, "'a'");
  m = index_error(R"({"weight_map": {"a": "shard1.safetensors", "b": "missing.safetensors"}})");
  EXPECT_HAS(m, "'b'");
  EXPECT_HAS(m, "missing.safetensors");
  m = index_error(R"({"weight_map": {"a": "shard1.safetensors", "c": "shard1.safetensors"}})");
  EXPECT_HAS(m, "'c'");
  EXPECT_HAS(m, "does not hold");
  m = index_error(R"({"weight_map": {"a": "/etc/passwd"}})");
  EXPECT_HAS(m, "relative");
  // A malformed shard is reported with the shard's own path.
  write_bytes(path("broken.safetensors"), "xx");
  write_bytes(idx, R"({"weight_map": {"a": "broken.safetensors"}})");
  m = error_of([&] { SafetensorsModel x(idx); });
  EXPECT_HAS(m, path("broken.safetensors"));
  // The directory form finds the index too.
  write_bytes(idx, R"({"metadata": {"total_size": 8}, "weight_map": {"a": "shard1.safetensors"}})");
  SafetensorsModel ok(dir().string());
  EXPECT_EQ(ok.read_f32("a").data, f);
}
