// PyTorch checkpoints built byte by byte for the tests (header-only): a small zip writer (classic and
// zip64, entries padded like torch's), a pickle writer emitting what torch.save emits, the standard
// small state_dict the tests read back, and the CheckpointFilesTest fixture that writes such files into
// a scratch directory. Shared by the TorchCheckpoint and WeightSource tests.
#pragma once

#include <gtest/gtest.h>

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "core/error.h"
#include "core/half_float.h"
#include "io/safetensors.h"
#include "io/torch_checkpoint.h"
#include "io/zip_archive.h"
#include "test_util.h"

namespace moepp::test {

// ---------------------------------------------------------------------------------------------------
// Byte writers

inline void put16(std::string& s, uint32_t v) {
  s += static_cast<char>(v & 0xFF);
  s += static_cast<char>((v >> 8) & 0xFF);
}
inline void put32(std::string& s, uint32_t v) {
  put16(s, v & 0xFFFF);
  put16(s, v >> 16);
}
inline void put64(std::string& s, uint64_t v) {
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
inline std::string zip64_extra(uint64_t size, const uint64_t* local_header_offset = nullptr) {
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
inline void put_entry_fields(std::string& s, const ZipIn& e, uint32_t crc, bool zip64, size_t extra_size) {
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
inline std::string make_zip(const std::vector<ZipIn>& in, bool zip64 = false) {
  std::string out, cd;
  for (const ZipIn& e : in) {
    const uint64_t off = out.size();
    const uint32_t crc = io::crc32_of(reinterpret_cast<const uint8_t*>(e.data.data()), e.data.size());
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
inline std::string bytes(const char (&s)[N]) {
  return std::string(s, N - 1);
}

struct TensorSpec {
  std::string name, storage_type, key;
  int64_t numel, offset;
  std::vector<int64_t> size, stride;
};

// The pickle of an OrderedDict {name: tensor} as torch.save writes it.
inline std::string state_dict_pickle(const std::vector<TensorSpec>& ts, bool p4 = false) {
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

inline std::string floats(const std::vector<float>& v) {
  return std::string(reinterpret_cast<const char*>(v.data()), v.size() * 4);
}
inline std::string bf16s(const std::vector<float>& v) {
  std::string s;
  for (float f : v) put16(s, f32_to_bf16(f));
  return s;
}

// ---------------------------------------------------------------------------------------------------
// The standard checkpoint, the fixture, and error checks

// The standard small checkpoint: "a" [2, 3] F32 at offset 2 of a 12-float storage, "t" its
// transposed [3, 2] view of the same storage, "b" [4] BF16.
inline const std::vector<float> kStore = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11};
inline const std::vector<float> kB = {1.5f, -2.0f, 0.25f, 3.0f};

inline std::vector<TensorSpec> standard_specs() {
  return {{"a", "FloatStorage", "0", 12, 2, {2, 3}, {3, 1}},
          {"t", "FloatStorage", "0", 12, 0, {3, 2}, {1, 3}},
          {"b", "BFloat16Storage", "1", 4, 0, {4}, {1}}};
}

inline std::vector<ZipIn> standard_entries(const std::string& pickle) {
  return {{"archive/data.pkl", pickle}, {"archive/data/0", floats(kStore)}, {"archive/data/1", bf16s(kB)},
          {"archive/version", "3\n"}};
}

inline std::string standard_zip(bool zip64 = false, bool p4 = false) {
  return make_zip(standard_entries(state_dict_pickle(standard_specs(), p4)), zip64);
}

// A fixture with a scratch directory (named `prefix`_...) to write checkpoint files into.
class CheckpointFilesTest : public ScratchDirTest {
 protected:
  explicit CheckpointFilesTest(const std::string& prefix) : ScratchDirTest(prefix) {}
  // Writes `bytes` as file `name` of the scratch directory (creating its parent folders); returns its path.
  std::string write(const std::string& name, const std::string& bytes) const {
    const std::string p = path(name);
    std::filesystem::create_directories(std::filesystem::path(p).parent_path());
    write_bytes(p, bytes);
    return p;
  }
};

// Runs `fn` and checks that it throws moepp::Error whose message holds every needle.
template <class F>
inline void expect_error(F fn, const std::vector<std::string>& needles) {
  try {
    fn();
    ADD_FAILURE() << "no error; expected one mentioning " << needles[0];
  } catch (const Error& e) {
    const std::string m = e.what();
    for (const std::string& n : needles)
      EXPECT_NE(m.find(n), std::string::npos) << "message: " << m << "\nmissing: " << n;
  }
}

}  // namespace moepp::test
