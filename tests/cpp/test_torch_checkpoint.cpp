// Unit tests of io/torch_checkpoint: PyTorch zip checkpoints built byte by byte (tests/cpp/
// torch_checkpoint_files.h: classic and zip64 zips, protocol 2 and 4 pickles), read back through
// TorchCheckpoint; shared storages, offsets and strided views; and one test per malformed input
// (truncated zip, bad central directory, compressed entry, unknown opcode, disallowed global, storage
// too small, missing tensor, ...), each a moepp::Error naming the file. Every truncation and many
// single-byte corruptions of a valid file must give an Error, never a crash.
#include <gtest/gtest.h>

#include <cstring>
#include <string>
#include <vector>

#include "core/error.h"
#include "core/half_float.h"
#include "io/safetensors.h"
#include "io/torch_checkpoint.h"
#include "io/zip_archive.h"
#include "test_util.h"
#include "torch_checkpoint_files.h"

using moepp::Error;
using moepp::f32_to_bf16;
using namespace moepp::io;
using namespace moepp::test;

namespace {

class TorchCheckpointTest : public CheckpointFilesTest {
 protected:
  TorchCheckpointTest() : CheckpointFilesTest("moepp_torch") {}
};

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

// Declared sizes beyond what the file holds are refused on open, before anything is allocated
// (docs/limits.md): a storage of 2^62 elements (its byte count overflows), one of 2^40 elements in a
// 48-byte entry, and a stride-0 view of 2^40 elements of a 12-element storage.
TEST_F(TorchCheckpointTest, EnormousDeclaredSizes) {
  auto specs = standard_specs();
  specs[0].numel = specs[1].numel = int64_t{1} << 62;
  const std::string p = write("huge_storage.bin", make_zip(standard_entries(state_dict_pickle(specs))));
  expect_error([&] { TorchCheckpoint c(p); }, {p, "storage '0'", "too small", "4611686018427387904"});
  auto specs2 = standard_specs();
  specs2[0].numel = specs2[1].numel = int64_t{1} << 40;
  const std::string p2 = write("big_storage.bin", make_zip(standard_entries(state_dict_pickle(specs2))));
  expect_error([&] { TorchCheckpoint c(p2); }, {p2, "storage '0' has 48 bytes, too small"});
  auto specs3 = standard_specs();
  specs3[0].size = {int64_t{1} << 40};
  specs3[0].stride = {0};
  const std::string p3 = write("stride0.bin", make_zip(standard_entries(state_dict_pickle(specs3))));
  expect_error([&] { TorchCheckpoint c(p3); }, {p3, "tensor 'a'", "1099511627776 elements", "holds 12"});
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

}  // namespace
