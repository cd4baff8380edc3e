// Tests for io/torch_checkpoint and io/weight_source: PyTorch zip checkpoints built byte by byte here
// (a small zip writer, classic and zip64, and a pickle writer emitting what torch.save emits), read
// back through TorchCheckpoint / open_weights; shared storages, offsets and strided views; and one test
// per malformed input (truncated zip, bad central directory, compressed entry, unknown opcode,
// disallowed global, storage too small, missing tensor, ...), each a moepp::Error naming the file.
// Every truncation and many single-byte corruptions of a valid file must give an Error, never a crash.
#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include "core/error.h"
#include "core/half_float.h"
#include "io/safetensors.h"
#include "io/torch_checkpoint.h"
#include "io/weight_source.h"
#include "io/zip_archive.h"
#include "test_util.h"

namespace fs = std::filesystem;
using moepp::Error;
using moepp::f32_to_bf16;
using namespace moepp::io;
using namespace moepp::test;

namespace {

// ---------------------------------------------------------------------------------------------------
// Byte writers

void put16(std::string& s, uint32_t v) {
  s += static_cast<char>(v & 0xFF);
  s += static_cast<char>((v >> 8) & 0xFF);
}
void put32(std::string& s, uint32_t v) {
  put16(s, v & 0xFFFF);
  put16(s, v >> 16);
}
void put64(std::string& s, uint64_t v) {
  put32(s, static_cast<uint32_t>(v));
  put32(s, static_cast<uint32_t>(v >> 32));
}

struct ZipIn {
  std::string name, data;
  uint16_t method = 0;
  uint16_t flags = 0;
};

// The zip64 extended-information extra field: both sizes (stored, so equal), then the local header's
// offset when `local_header_offset` is given (central directory entries).
std::string zip64_extra(uint64_t size, const uint64_t* local_header_offset = nullptr) {
  std::string x;
  put16(x, 1);
  put16(x, local_header_offset ? 24 : 16);
  put64(x, size);
  put64(x, size);
  if (local_header_offset) put64(x, *local_header_offset);
  return x;
}

// The fields a local header and its central directory entry share, from the flags to the extra field's
// length (zip64: the 32-bit sizes are 0xFFFFFFFF, the real ones in the extra field).
void put_entry_fields(std::string& s, const ZipIn& e, uint32_t crc, bool zip64, size_t extra_size) {
  put16(s, e.flags);
  put16(s, e.method);
  put32(s, 0);  // modification time and date
  put32(s, crc);
  put32(s, zip64 ? 0xFFFFFFFFu : static_cast<uint32_t>(e.data.size()));  // compressed size
  put32(s, zip64 ? 0xFFFFFFFFu : static_cast<uint32_t>(e.data.size()));  // uncompressed size
  put16(s, static_cast<uint32_t>(e.name.size()));
  put16(s, static_cast<uint32_t>(extra_size));
}

// A zip archive of `in` (data stored as given, whatever `method` says). With zip64 every size and
// offset goes through zip64 extra fields and the zip64 end records. Local headers are padded like
// torch's so that data starts at a multiple of 64.
std::string make_zip(const std::vector<ZipIn>& in, bool zip64 = false) {
  std::string out, cd;
  for (const ZipIn& e : in) {
    const uint64_t off = out.size();
    const uint32_t crc = crc32_of(reinterpret_cast<const uint8_t*>(e.data.data()), e.data.size());
    std::string lx = zip64 ? zip64_extra(e.data.size()) : "";
    const size_t unpadded = off + 30 + e.name.size() + lx.size() + 4;
    const size_t pad = (64 - unpadded % 64) % 64;
    put16(lx, 0x4246);  // torch's "FB" padding field
    put16(lx, static_cast<uint32_t>(pad));
    lx.append(pad, 'Z');
    put32(out, 0x04034b50);
    put16(out, zip64 ? 45 : 20);  // version needed
    put_entry_fields(out, e, crc, zip64, lx.size());
    out += e.name + lx + e.data;

    const std::string cx = zip64 ? zip64_extra(e.data.size(), &off) : "";
    put32(cd, 0x02014b50);
    put16(cd, 45);               // version made by
    put16(cd, zip64 ? 45 : 20);  // version needed
    put_entry_fields(cd, e, crc, zip64, cx.size());
    put16(cd, 0);
    put16(cd, 0);
    put16(cd, 0);
    put32(cd, 0);
    put32(cd, zip64 ? 0xFFFFFFFFu : static_cast<uint32_t>(off));
    cd += e.name + cx;
  }
  const uint64_t cd_off = out.size();
  out += cd;
  if (zip64) {
    const uint64_t rec = out.size();
    put32(out, 0x06064b50);
    put64(out, 44);
    put16(out, 45);
    put16(out, 45);
    put32(out, 0);
    put32(out, 0);
    put64(out, in.size());
    put64(out, in.size());
    put64(out, cd.size());
    put64(out, cd_off);
    put32(out, 0x07064b50);
    put32(out, 0);
    put64(out, rec);
    put32(out, 1);
  }
  put32(out, 0x06054b50);
  put16(out, 0);
  put16(out, 0);
  put16(out, zip64 ? 0xFFFF : static_cast<uint32_t>(in.size()));
  put16(out, zip64 ? 0xFFFF : static_cast<uint32_t>(in.size()));
  put32(out, zip64 ? 0xFFFFFFFFu : static_cast<uint32_t>(cd.size()));
  put32(out, zip64 ? 0xFFFFFFFFu : static_cast<uint32_t>(cd_off));
  put16(out, 0);
  return out;
}

// Pickle opcodes, protocol 2 as torch.save writes them (protocol 4 forms where asked).
struct Pickle {
  std::string b;
  bool p4 = false;
  explicit Pickle(bool proto4 = false) : p4(proto4) {
    b += '\x80';
    b += static_cast<char>(p4 ? 4 : 2);
  }
  Pickle& op(char c) {
    b += c;
    return *this;
  }
  Pickle& str(const std::string& s) {
    if (p4 && s.size() < 256) {
      b += '\x8c';
      b += static_cast<char>(s.size());
    } else {
      b += 'X';
      put32(b, static_cast<uint32_t>(s.size()));
    }
    b += s;
    return *this;
  }
  Pickle& integer(int64_t v) {
    if (v >= 0 && v < 256) {
      b += 'K';
      b += static_cast<char>(v);
    } else if (v >= INT32_MIN && v <= INT32_MAX) {
      b += 'J';
      put32(b, static_cast<uint32_t>(v));
    } else {
      b += '\x8a';
      b += '\x08';
      put64(b, static_cast<uint64_t>(v));
    }
    return *this;
  }
  Pickle& global(const std::string& module, const std::string& name) {
    if (p4) {
      str(module).str(name).op('\x93');
    } else {
      b += 'c';
      b += module + "\n" + name + "\n";
    }
    return *this;
  }
  Pickle& ints(const std::vector<int64_t>& v) {
    op('(');
    for (int64_t x : v) integer(x);
    return op('t');
  }
  Pickle& ordered_dict() { return global("collections", "OrderedDict").op(')').op('R'); }
};

// The bytes of a string literal (which may hold NULs).
template <size_t N>
std::string bytes(const char (&s)[N]) {
  return std::string(s, N - 1);
}

struct TensorSpec {
  std::string name, storage_type, key;
  int64_t numel, offset;
  std::vector<int64_t> size, stride;
};

// The pickle of an OrderedDict {name: tensor} as torch.save writes it.
std::string state_dict_pickle(const std::vector<TensorSpec>& ts, bool p4 = false) {
  Pickle p(p4);
  p.ordered_dict().op('(');
  for (const TensorSpec& t : ts) {
    p.str(t.name).global("torch._utils", "_rebuild_tensor_v2").op('(');
    p.op('(').str("storage").global("torch", t.storage_type).str(t.key).str("cpu").integer(t.numel).op('t').op('Q');
    p.integer(t.offset).ints(t.size).ints(t.stride).op('\x89').ordered_dict().op('t').op('R');
  }
  p.op('u').op('.');
  return p.b;
}

std::string floats(const std::vector<float>& v) {
  return std::string(reinterpret_cast<const char*>(v.data()), v.size() * 4);
}
std::string bf16s(const std::vector<float>& v) {
  std::string s;
  for (float f : v) put16(s, f32_to_bf16(f));
  return s;
}

class TorchCheckpointTest : public ScratchDirTest {
 protected:
  TorchCheckpointTest() : ScratchDirTest("moepp_torch") {}
  // Writes `bytes` as file `name` of the scratch directory (creating its parent folders); returns its path.
  std::string write(const std::string& name, const std::string& bytes) const {
    const std::string p = path(name);
    fs::create_directories(fs::path(p).parent_path());
    write_bytes(p, bytes);
    return p;
  }
};

// The standard small checkpoint: "a" [2, 3] F32 at offset 2 of a 12-float storage, "t" its
// transposed [3, 2] view of the same storage, "b" [4] BF16.
const std::vector<float> kStore = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11};
const std::vector<float> kB = {1.5f, -2.0f, 0.25f, 3.0f};

std::vector<TensorSpec> standard_specs() {
  return {{"a", "FloatStorage", "0", 12, 2, {2, 3}, {3, 1}},
          {"t", "FloatStorage", "0", 12, 0, {3, 2}, {1, 3}},
          {"b", "BFloat16Storage", "1", 4, 0, {4}, {1}}};
}

std::vector<ZipIn> standard_entries(const std::string& pickle) {
  return {{"archive/data.pkl", pickle}, {"archive/data/0", floats(kStore)}, {"archive/data/1", bf16s(kB)},
          {"archive/version", "3\n"}};
}

std::string standard_zip(bool zip64 = false, bool p4 = false) {
  return make_zip(standard_entries(state_dict_pickle(standard_specs(), p4)), zip64);
}

void expect_standard(const TorchCheckpoint& c) {
  EXPECT_EQ(c.names(), (std::vector<std::string>{"a", "b", "t"}));
  std::vector<float> a(6), t(6), b(4);
  c.read_f32("a", a.data());
  c.read_f32("t", t.data());
  c.read_f32("b", b.data());
  EXPECT_EQ(a, (std::vector<float>{2, 3, 4, 5, 6, 7}));
  EXPECT_EQ(t, (std::vector<float>{0, 3, 1, 4, 2, 5}));  // t[i][j] = store[i + 3 j]
  EXPECT_EQ(b, kB);
  EXPECT_EQ(c.info("a").shape, (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(c.info("b").dtype, DType::kBF16);
  ASSERT_NE(c.mapped("a"), nullptr);
  float first;
  std::memcpy(&first, c.mapped("a"), 4);
  EXPECT_EQ(first, 2.0f);
  EXPECT_EQ(c.mapped("t"), nullptr);  // not contiguous
  ASSERT_NE(c.mapped("b"), nullptr);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(c.mapped("b")) % 64, 0u);  // torch-style aligned entries
}

// Runs `fn` and checks that it throws moepp::Error whose message holds every needle.
template <class F>
void expect_error(F fn, const std::vector<std::string>& needles) {
  try {
    fn();
    ADD_FAILURE() << "no error; expected one mentioning " << needles[0];
  } catch (const Error& e) {
    const std::string m = e.what();
    for (const std::string& n : needles)
      EXPECT_NE(m.find(n), std::string::npos) << "message: " << m << "\nmissing: " << n;
  }
}

// ---------------------------------------------------------------------------------------------------

TEST_F(TorchCheckpointTest, ReadsTensorsViewsAndSharedStorage) {
  const std::string p = write("pytorch_model.bin", standard_zip());
  const TorchCheckpoint c(p);
  expect_standard(c);
  EXPECT_EQ(c.info("a").storage_key, c.info("t").storage_key);
}

TEST_F(TorchCheckpointTest, ReadsZip64) {
  const TorchCheckpoint c(write("z64.bin", standard_zip(/*zip64=*/true)));
  expect_standard(c);
}

TEST_F(TorchCheckpointTest, ReadsProtocol4Pickle) {
  // Protocol 4: FRAME, SHORT_BINUNICODE, STACK_GLOBAL, MEMOIZE.
  std::string pk = state_dict_pickle(standard_specs(), /*p4=*/true);
  // Insert a FRAME covering the rest and a MEMOIZE after the first REDUCE.
  const std::string body = pk.substr(2);
  std::string framed = pk.substr(0, 2) + '\x95';
  put64(framed, body.size());
  framed += body;
  const TorchCheckpoint c(write("p4.bin", make_zip(standard_entries(framed))));
  expect_standard(c);
}

TEST_F(TorchCheckpointTest, ParametersMemoAndMetadataBuild) {
  // state_dict() of a module: Parameter wrappers, memoized globals, and the _metadata BUILD.
  Pickle p;
  p.global("collections", "OrderedDict").op('q').op('\0').op(')').op('R');  // memo 0: OrderedDict
  p.op('(').str("w").global("torch._utils", "_rebuild_parameter");
  p.global("torch._utils", "_rebuild_tensor_v2").op('r').b += bytes("\x01\x00\x00\x00");  // LONG_BINPUT 1
  p.op('(').op('(').str("storage").global("torch", "FloatStorage").str("0").str("cpu").integer(12).op('t').op('Q');
  p.integer(0).ints({12}).ints({1}).op('\x88').op('j').b += std::string(4, '\0');  // LONG_BINGET 0
  p.op(')').op('R').op('t').op('R');  // the tensor
  p.op('\x88').op('h').op('\0').op(')').op('R').op('\x87').op('R');  // Parameter(tensor, True, OrderedDict())
  p.op('u');
  p.op('}').str("_metadata").ordered_dict().op('(').str("").op('}').str("version").integer(1).op('s').op('u');
  p.op('s').op('b').op('.');
  const TorchCheckpoint c(write("param.bin", make_zip({{"m/data.pkl", p.b}, {"m/data/0", floats(kStore)}})));
  std::vector<float> w(12);
  c.read_f32("w", w.data());
  EXPECT_EQ(w, kStore);
}

TEST_F(TorchCheckpointTest, EveryTruncationIsAnError) {
  const std::string z = standard_zip();
  for (size_t n = 0; n < z.size(); ++n) {
    const std::string p = write("trunc.bin", z.substr(0, n));
    try {
      TorchCheckpoint c(p);
      ADD_FAILURE() << "truncated to " << n << " bytes: no error";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(p), std::string::npos) << e.what();
    }
  }
}

TEST_F(TorchCheckpointTest, CorruptBytesNeverCrash) {
  // Flipping any single byte either still reads (a data byte) or gives an Error naming the file.
  for (bool zip64 : {false, true}) {
    const std::string z = standard_zip(zip64);
    for (size_t i = 0; i < z.size(); ++i) {
      for (uint8_t x : {uint8_t{0xFF}, uint8_t{0x01}}) {
        std::string bad = z;
        bad[i] = static_cast<char>(bad[i] ^ x);
        const std::string p = write("corrupt.bin", bad);
        try {
          TorchCheckpoint c(p);
          for (const std::string& n : c.names()) {
            std::vector<float> buf(moepp::Tensor::numel_of(c.info(n).shape));
            c.read_f32(n, buf.data());
          }
        } catch (const Error& e) {
          EXPECT_NE(std::string(e.what()).find(p), std::string::npos) << e.what();
        }
      }
    }
  }
}

TEST_F(TorchCheckpointTest, BadCentralDirectory) {
  std::string z = standard_zip();
  const size_t cd = z.find(std::string("PK\x01\x02", 4));
  ASSERT_NE(cd, std::string::npos);
  z[cd + 1] = 'X';
  const std::string p = write("badcd.bin", z);
  expect_error([&] { TorchCheckpoint c(p); }, {p, "central directory entry 0", "bad signature"});

  // A central directory offset pointing past the end.
  std::string z2 = standard_zip();
  const size_t eocd = z2.size() - 22;
  z2[eocd + 19] = '\x7f';
  const std::string p2 = write("badoff.bin", z2);
  expect_error([&] { TorchCheckpoint c(p2); }, {p2, "outside the file"});
}

TEST_F(TorchCheckpointTest, CompressedEntryNamesIt) {
  auto entries = standard_entries(state_dict_pickle(standard_specs()));
  entries[2].method = 8;
  const std::string p = write("deflate.bin", make_zip(entries));
  expect_error([&] { TorchCheckpoint c(p); }, {p, "'archive/data/1'", "compressed (method 8)"});
}

TEST_F(TorchCheckpointTest, EncryptedEntry) {
  auto entries = standard_entries(state_dict_pickle(standard_specs()));
  entries[1].flags = 1;
  const std::string p = write("enc.bin", make_zip(entries));
  expect_error([&] { TorchCheckpoint c(p); }, {p, "'archive/data/0'", "encrypted"});
}

TEST_F(TorchCheckpointTest, UnknownOpcode) {
  // 'i' (INST) would build an arbitrary object: not in the restricted set.
  std::string pk = state_dict_pickle(standard_specs());
  pk.insert(2, "i");
  const std::string p = write("inst.bin", make_zip(standard_entries(pk)));
  expect_error([&] { TorchCheckpoint c(p); }, {p, "unsupported pickle opcode 0x69 at offset 2"});
  // '\xff' is no opcode at all.
  std::string pk2 = state_dict_pickle(standard_specs());
  pk2.insert(pk2.size() - 1, "\xff");
  const std::string p2 = write("ff.bin", make_zip(standard_entries(pk2)));
  expect_error([&] { TorchCheckpoint c(p2); },
               {p2, "unsupported pickle opcode 0xff at offset " + std::to_string(pk2.size() - 2)});
}

TEST_F(TorchCheckpointTest, DisallowedGlobals) {
  const std::vector<std::pair<std::string, std::string>> bad = {
      {"os", "system"}, {"builtins", "eval"}, {"torch", "DoubleStorage"}, {"torch._utils", "_rebuild_qtensor"}};
  for (const auto& [m, n] : bad) {
    Pickle p;
    p.op('}').str("x").global(m, n).op(')').op('R').op('s').op('.');
    const std::string path_ = write("g.bin", make_zip({{"archive/data.pkl", p.b}}));
    expect_error([&] { TorchCheckpoint c(path_); }, {path_, "global '" + m + "." + n + "' is not allowed"});
  }
  // STACK_GLOBAL too.
  Pickle p4(true);
  p4.op('}').str("x").global("subprocess", "Popen").op(')').op('R').op('s').op('.');
  const std::string ps = write("sg.bin", make_zip({{"archive/data.pkl", p4.b}}));
  expect_error([&] { TorchCheckpoint c(ps); }, {ps, "global 'subprocess.Popen' is not allowed"});
  // An allowed global that is not callable.
  Pickle p5;
  p5.op('}').str("x").global("torch", "FloatStorage").op(')').op('R').op('s').op('.');
  const std::string pc = write("call.bin", make_zip({{"archive/data.pkl", p5.b}}));
  expect_error([&] { TorchCheckpoint c(pc); }, {pc, "cannot be called"});
}

TEST_F(TorchCheckpointTest, StorageTooSmall) {
  auto entries = standard_entries(state_dict_pickle(standard_specs()));
  entries[1].data.resize(40);  // 10 floats where the pickle says 12
  const std::string p = write("small.bin", make_zip(entries));
  expect_error([&] { TorchCheckpoint c(p); }, {p, "storage '0'", "has 40 bytes, too small"});
}

TEST_F(TorchCheckpointTest, ViewOutsideStorage) {
  auto specs = standard_specs();
  specs[0].offset = 7;  // elements 7 .. 12 of a 12-element storage
  const std::string p = write("view.bin", make_zip(standard_entries(state_dict_pickle(specs))));
  expect_error([&] { TorchCheckpoint c(p); }, {p, "tensor 'a'", "needs element 12", "holds 12 elements"});
  auto specs2 = standard_specs();
  specs2[1].stride = {1, -3};
  const std::string p2 = write("neg.bin", make_zip(standard_entries(state_dict_pickle(specs2))));
  expect_error([&] { TorchCheckpoint c(p2); }, {p2, "tensor 't'", "negative size or stride"});
  auto specs3 = standard_specs();
  specs3[0].size = {int64_t{1} << 40, int64_t{1} << 40};
  const std::string p3 = write("ovf.bin", make_zip(standard_entries(state_dict_pickle(specs3))));
  expect_error([&] { TorchCheckpoint c(p3); }, {p3, "tensor 'a'", "overflow"});
}

TEST_F(TorchCheckpointTest, MissingStorageEntry) {
  auto entries = standard_entries(state_dict_pickle(standard_specs()));
  entries.erase(entries.begin() + 2);
  const std::string p = write("nostore.bin", make_zip(entries));
  expect_error([&] { TorchCheckpoint c(p); }, {p, "tensor 'b'", "'archive/data/1'", "is missing"});
}

TEST_F(TorchCheckpointTest, MalformedPickles) {
  struct Case {
    std::string name, pickle, needle;
  };
  const std::vector<Case> cases = {
      {"no_stop", bytes("\x80\x02}"), "without a STOP"},
      {"underflow", bytes("\x80\x02s."), "stack underflow"},
      {"memo", bytes("\x80\x02h\x05."), "memo key 5 is not defined"},
      {"truncated_str", bytes("\x80\x02X\xff\x00\x00\x00" "ab"), "pickle is truncated"},
      {"not_dict", bytes("\x80\x02K\x01."), "holds a int, not a state_dict"},
      {"value_not_tensor", bytes("\x80\x02}X\x01\x00\x00\x00xK\x01s."), "tensor 'x' is a int, not a tensor"},
      {"key_not_str", bytes("\x80\x02}K\x01K\x01s."), "key is a int"},
      {"two_left", bytes("\x80\x02}}."), "STOP with 2 values"},
      {"protocol", bytes("\x80\x09}."), "unsupported pickle protocol 9"},
      {"long_int", bytes("\x80\x02\x8a\x09") + std::string(9, '\x01') + ".", "integer of 9 bytes"},
      {"frame", bytes("\x80\x04\x95\xff\x00\x00\x00\x00\x00\x00\x00}."), "frame of 255 bytes"},
      {"mark_missing", bytes("\x80\x02}u."), "no MARK"},
      {"setitem_on_list", bytes("\x80\x02]K\x01K\x02s."), "SETITEM on a list"},
      {"build_on_list", bytes("\x80\x02]}b."), "BUILD of a list"},
      {"persid", bytes("\x80\x02K\x01Q."), "persistent id is not"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    const std::string p = write(c.name + ".bin", make_zip({{"archive/data.pkl", c.pickle}}));
    expect_error([&] { TorchCheckpoint t(p); }, {p, c.needle});
  }
  // Duplicate key.
  auto specs = standard_specs();
  specs[1].name = "a";
  const std::string p = write("dup.bin", make_zip(standard_entries(state_dict_pickle(specs))));
  expect_error([&] { TorchCheckpoint t(p); }, {p, "tensor 'a' appears twice"});
}

TEST_F(TorchCheckpointTest, NotAZipOrLegacyFormat) {
  const std::string legacy = write("legacy.bin", bytes("\x80\x02\x8a\x0a") + "legacy magic number...");
  expect_error([&] { TorchCheckpoint c(legacy); }, {legacy, "legacy"});
  const std::string text = write("text.bin", "hello world, not a checkpoint at all");
  expect_error([&] { TorchCheckpoint c(text); }, {text, "not a PyTorch zip checkpoint"});
  const std::string nopkl = write("nopkl.bin", make_zip({{"archive/data/0", floats(kStore)}}));
  expect_error([&] { TorchCheckpoint c(nopkl); }, {nopkl, "no <name>/data.pkl"});
  auto entries = standard_entries(state_dict_pickle(standard_specs()));
  entries.push_back({"archive/byteorder", "big"});
  const std::string big = write("big.bin", make_zip(entries));
  expect_error([&] { TorchCheckpoint c(big); }, {big, "byte order 'big'"});
  auto crc = standard_entries(state_dict_pickle(standard_specs()));
  std::string z = make_zip(crc);
  z[z.find("storage") + 1] = 'X';  // the pickle's CRC no longer matches
  const std::string badcrc = write("crc.bin", z);
  expect_error([&] { TorchCheckpoint c(badcrc); }, {badcrc, "CRC-32"});
}

TEST_F(TorchCheckpointTest, IsContiguous) {
  EXPECT_TRUE(is_contiguous({}, {}));
  EXPECT_TRUE(is_contiguous({2, 3}, {3, 1}));
  EXPECT_TRUE(is_contiguous({2, 1, 3}, {3, 99, 1}));
  EXPECT_TRUE(is_contiguous({0, 3}, {7, 7}));
  EXPECT_FALSE(is_contiguous({3, 2}, {1, 3}));
  EXPECT_FALSE(is_contiguous({2, 3}, {4, 1}));
  EXPECT_FALSE(is_contiguous({2}, {1, 1}));
}

// ---------------------------------------------------------------------------------------------------
// WeightSource

TEST_F(TorchCheckpointTest, OpenWeightsSingleBin) {
  write("m/pytorch_model.bin", standard_zip());
  auto src = open_weights(path("m"));
  EXPECT_EQ(src->source(), path("m/pytorch_model.bin"));
  EXPECT_EQ(src->names(), (std::vector<std::string>{"a", "b", "t"}));
  EXPECT_TRUE(src->contains("t"));
  EXPECT_FALSE(src->contains("zz"));
  const WeightInfo i = src->info("t");
  EXPECT_EQ(i.shape, (std::vector<int64_t>{3, 2}));
  EXPECT_EQ(i.dtype, DType::kF32);
  std::vector<float> t(6);
  src->read_f32("t", t.data());
  EXPECT_EQ(t, (std::vector<float>{0, 3, 1, 4, 2, 5}));
  EXPECT_EQ(src->mapped("t"), nullptr);
  EXPECT_NE(src->mapped("a"), nullptr);
  expect_error([&] { src->info("zz"); }, {path("m/pytorch_model.bin"), "'zz'"});
  std::vector<float> buf(6);
  expect_error([&] { src->read_f32("missing.weight", buf.data()); }, {path("m/pytorch_model.bin"), "'missing.weight'"});
}

TEST_F(TorchCheckpointTest, OpenWeightsShardedBin) {
  // Shard 1: a and t (storage 0); shard 2: b.
  const std::vector<TensorSpec> s = standard_specs();
  write("m/pytorch_model-00001-of-00002.bin",
        make_zip({{"archive/data.pkl", state_dict_pickle({s[0], s[1]})}, {"archive/data/0", floats(kStore)}}));
  write("m/pytorch_model-00002-of-00002.bin",
        make_zip({{"archive/data.pkl", state_dict_pickle({s[2]})}, {"archive/data/1", bf16s(kB)}}));
  const std::string idx =
      write("m/pytorch_model.bin.index.json",
            R"({"metadata": {"total_size": 56}, "weight_map": {"a": "pytorch_model-00001-of-00002.bin",
                "t": "pytorch_model-00001-of-00002.bin", "b": "pytorch_model-00002-of-00002.bin"}})");
  auto src = open_weights(path("m"));
  EXPECT_EQ(src->source(), idx);
  EXPECT_EQ(src->names(), (std::vector<std::string>{"a", "b", "t"}));
  std::vector<float> b(4), a(6);
  src->read_f32("b", b.data());
  src->read_f32("a", a.data());
  EXPECT_EQ(b, kB);
  EXPECT_EQ(a, (std::vector<float>{2, 3, 4, 5, 6, 7}));

  write("m/pytorch_model.bin.index.json", R"({"weight_map": {"a": "nope.bin"}})");
  expect_error([&] { open_weights(path("m")); }, {idx, "'nope.bin'", "does not exist"});
  write("m/pytorch_model.bin.index.json", R"({"weight_map": {"b": "pytorch_model-00001-of-00002.bin"}})");
  expect_error([&] { open_weights(path("m")); }, {idx, "tensor 'b'", "does not hold it"});
  write("m/pytorch_model.bin.index.json", R"({"weight_map": {"b": 3}})");
  expect_error([&] { open_weights(path("m")); }, {idx, "not a string"});
  write("m/pytorch_model.bin.index.json", R"({"weight_map": )");
  expect_error([&] { open_weights(path("m")); }, {idx, "invalid JSON"});
}

TEST_F(TorchCheckpointTest, OpenWeightsOrderAndSafetensors) {
  expect_error([&] { open_weights(path("nowhere")); }, {path("nowhere"), "no such file"});
  fs::create_directories(path("e"));
  expect_error([&] { open_weights(path("e")); }, {path("e"), "pytorch_model.bin.index.json"});

  write("m/pytorch_model.bin", standard_zip());
  SafetensorsWriter w;
  const moepp::Tensor x({2, 2}, 0.5f);
  w.add_f32("x", x);
  w.add_bf16("y", x);
  w.write(path("m/model.safetensors"));
  auto src = open_weights(path("m"));  // model.safetensors comes first
  EXPECT_EQ(src->source(), path("m/model.safetensors"));
  EXPECT_EQ(src->names(), (std::vector<std::string>{"x", "y"}));
  std::vector<float> y(4);
  src->read_f32("y", y.data());
  EXPECT_EQ(y, std::vector<float>(4, 0.5f));
  EXPECT_EQ(src->info("y").dtype, DType::kBF16);
  ASSERT_NE(src->mapped("x"), nullptr);
  float f;
  std::memcpy(&f, src->mapped("x"), 4);
  EXPECT_EQ(f, 0.5f);
  expect_error([&] { src->info("a"); }, {path("m/model.safetensors"), "'a'"});
  // A weights file can be named directly.
  EXPECT_EQ(open_weights(path("m/pytorch_model.bin"))->names().size(), 3u);
}

}  // namespace
