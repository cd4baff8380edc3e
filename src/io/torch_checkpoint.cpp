// PyTorch zip checkpoints (see torch_checkpoint.h): the zip central-directory reader, the restricted
// state_dict unpickler, and TorchCheckpoint (one mapped .bin file, tensors read as fp32 or mapped).
#include "io/torch_checkpoint.h"

#include <algorithm>
#include <array>
#include <bit>
#include <cstring>
#include <deque>
#include <limits>
#include <unordered_map>
#include <utility>

#include "core/error.h"
#include "core/little_endian.h"

static_assert(std::endian::native == std::endian::little, "the checkpoint reader assumes a little-endian host");

namespace moepp::io {
namespace {

// A name quoted for messages; long (hostile) names are shortened, control bytes escaped.
std::string q(const std::string& s) {
  constexpr size_t kMax = 200;
  std::string r = "'";
  for (size_t i = 0; i < s.size() && i < kMax; ++i) {
    const unsigned char c = static_cast<unsigned char>(s[i]);
    if (c < 0x20 || c == 0x7F) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\x%02x", c);
      r += buf;
    } else {
      r += static_cast<char>(c);
    }
  }
  r += "'";
  if (s.size() > kMax) r += "... (" + std::to_string(s.size()) + " bytes)";
  return r;
}

std::string hex2(unsigned v) {
  char buf[8];
  std::snprintf(buf, sizeof buf, "0x%02x", v & 0xFFu);
  return buf;
}


bool add_overflow(uint64_t a, uint64_t b, uint64_t* out) { return __builtin_add_overflow(a, b, out); }

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

namespace {

constexpr uint32_t kLocalSig = 0x04034b50, kCentralSig = 0x02014b50, kEocdSig = 0x06054b50;
constexpr uint32_t kEocd64Sig = 0x06064b50, kLocator64Sig = 0x07064b50;
constexpr size_t kEocdSize = 22, kLocatorSize = 20, kEocd64Size = 56, kCentralSize = 46, kLocalSize = 30;

}  // namespace

namespace {
[[noreturn]] void zip_fail(const std::string& source, const std::string& m) { throw Error(source + ": " + m); }
}  // namespace

ZipArchive::ZipArchive(const uint8_t* data, size_t size, const std::string& source)
    : bytes_(data), size_(size), source_(source) {
  auto fail = [this](const std::string& m) { zip_fail(source_, m); };
  if (bytes_ == nullptr || size_ < kEocdSize)
    fail("not a zip archive (" + std::to_string(size_) + " bytes; truncated?)");

  // End of central directory: the last 22 + comment bytes (comment <= 65535 bytes, ending the file).
  size_t eocd = SIZE_MAX;
  const size_t lowest = size_ - kEocdSize > 0xFFFF ? size_ - kEocdSize - 0xFFFF : 0;
  for (size_t p = size_ - kEocdSize + 1; p-- > lowest;) {
    if (load_le32(bytes_ + p) == kEocdSig && p + kEocdSize + load_le16(bytes_ + p + 20) == size_) {
      eocd = p;
      break;
    }
  }
  if (eocd == SIZE_MAX) fail("no zip end-of-central-directory record: the file is truncated or not a zip archive");
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
    if (load_le32(z) != kEocd64Sig) fail("bad zip64 end-of-central-directory signature at offset " + std::to_string(rec));
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
  uint64_t cd_end = 0;
  if (add_overflow(cd_off, cd_size, &cd_end) || cd_end > cd_limit)
    fail("zip central directory (offset " + std::to_string(cd_off) + ", " + std::to_string(cd_size) +
         " bytes) is outside the file (truncated or corrupt?)");
  if (n_total > cd_size / kCentralSize)
    fail("zip central directory claims " + std::to_string(n_total) + " entries in " + std::to_string(cd_size) +
         " bytes");

  entries_.reserve(static_cast<size_t>(n_total));
  uint64_t p = cd_off;
  for (uint64_t i = 0; i < n_total; ++i) {
    const std::string where = "zip central directory entry " + std::to_string(i);
    if (cd_end - p < kCentralSize) fail(where + " runs past the central directory");
    const uint8_t* c = bytes_ + p;
    if (load_le32(c) != kCentralSig) fail(where + ": bad signature at offset " + std::to_string(p));
    ZipEntry ze;
    ze.flags = load_le16(c + 8);
    ze.method = load_le16(c + 10);
    ze.crc32 = load_le32(c + 16);
    ze.compressed_size = load_le32(c + 20);
    ze.size = load_le32(c + 24);
    const uint64_t nlen = load_le16(c + 28), xlen = load_le16(c + 30), clen = load_le16(c + 32);
    uint64_t disk_start = load_le16(c + 34);
    ze.header_offset = load_le32(c + 42);
    if (cd_end - p - kCentralSize < nlen + xlen + clen)
      fail(where + ": name or extra field runs past the central directory");
    ze.name.assign(reinterpret_cast<const char*>(c + kCentralSize), static_cast<size_t>(nlen));
    const std::string wname = "zip entry " + q(ze.name);

    // Extra fields: (id, length, data)*; the zip64 one (0x0001) holds the 64-bit values of the
    // fields that overflowed, in this order.
    const uint8_t* x = c + kCentralSize + nlen;
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
    if (disk_start != 0) fail(wname + ": multi-disk zip archives are not supported");
    if (ze.flags & 1u) fail(wname + " is encrypted");

    // The local header: its name and extra field lengths give where the data starts.
    const uint64_t h = ze.header_offset;
    if (h > cd_off || cd_off - h < kLocalSize)
      fail(wname + ": local header offset " + std::to_string(h) + " is out of bounds");
    const uint8_t* lh = bytes_ + h;
    if (load_le32(lh) != kLocalSig) fail(wname + ": bad local header signature at offset " + std::to_string(h));
    const uint64_t lnlen = load_le16(lh + 26), lxlen = load_le16(lh + 28);
    if (cd_off - h - kLocalSize < lnlen + lxlen) fail(wname + ": local header runs past the entry data area");
    if (lnlen != nlen || std::memcmp(lh + kLocalSize, ze.name.data(), static_cast<size_t>(nlen)) != 0)
      fail(wname + ": local header name differs from the central directory");
    ze.data_offset = h + kLocalSize + lnlen + lxlen;
    if (ze.compressed_size > cd_off - ze.data_offset)
      fail(wname + ": data (" + std::to_string(ze.compressed_size) + " bytes at offset " +
           std::to_string(ze.data_offset) + ") runs past the entry data area (truncated or corrupt?)");
    if (ze.method == 0 && ze.compressed_size != ze.size)
      fail(wname + ": stored entry with compressed size " + std::to_string(ze.compressed_size) + " != size " +
           std::to_string(ze.size));
    if (!index_.emplace(ze.name, entries_.size()).second) fail("zip archive holds the entry " + q(ze.name) + " twice");
    entries_.push_back(std::move(ze));
    p += kCentralSize + nlen + xlen + clen;
  }
}

const ZipEntry* ZipArchive::find(const std::string& name) const {
  auto it = index_.find(name);
  return it == index_.end() ? nullptr : &entries_[it->second];
}

const uint8_t* ZipArchive::data(const ZipEntry& e, bool verify_crc) const {
  if (e.method != 0)
    throw Error(source_ + ": zip entry " + q(e.name) + " is compressed (method " + std::to_string(e.method) +
                "); only stored (uncompressed) entries are supported, as torch.save writes them");
  const uint8_t* d = bytes_ + e.data_offset;
  if (verify_crc && crc32_of(d, static_cast<size_t>(e.size)) != e.crc32)
    throw Error(source_ + ": zip entry " + q(e.name) + " fails its CRC-32 check (corrupt file)");
  return d;
}

const uint8_t* ZipArchive::data(const std::string& name, bool verify_crc) const {
  const ZipEntry* e = find(name);
  if (!e) throw Error(source_ + ": zip archive has no entry " + q(name));
  return data(*e, verify_crc);
}

// ---------------------------------------------------------------------------------------------------
// Restricted unpickler

namespace {

enum class Fn { kNone, kOrderedDict, kRebuildTensorV2, kRebuildParameter, kRebuildParameterWithState, kStorage };

struct PObj {
  enum class Kind { kNone, kBool, kInt, kFloat, kStr, kTuple, kList, kDict, kGlobal, kStorage, kTensor } kind;
  int64_t i = 0;          // int, bool
  std::string s;          // str; global "module.name"
  Fn fn = Fn::kNone;      // global
  DType dtype = DType::kF32;  // storage class (global), storage, tensor
  std::vector<PObj*> items;                   // tuple, list
  std::vector<std::pair<PObj*, PObj*>> dict;  // dict (insertion order)
  TorchTensorRef t;       // storage (dtype, key, numel), tensor
};

const char* kind_name(PObj::Kind k) {
  switch (k) {
    case PObj::Kind::kNone: return "None";
    case PObj::Kind::kBool: return "bool";
    case PObj::Kind::kInt: return "int";
    case PObj::Kind::kFloat: return "float";
    case PObj::Kind::kStr: return "str";
    case PObj::Kind::kTuple: return "tuple";
    case PObj::Kind::kList: return "list";
    case PObj::Kind::kDict: return "dict";
    case PObj::Kind::kGlobal: return "global";
    case PObj::Kind::kStorage: return "storage";
    case PObj::Kind::kTensor: return "tensor";
  }
  return "?";
}

// The whitelist: the only globals a pickle may name.
bool lookup_global(const std::string& module, const std::string& name, Fn* fn, DType* dtype) {
  if (module == "collections" && name == "OrderedDict") *fn = Fn::kOrderedDict;
  else if (module == "torch._utils" && name == "_rebuild_tensor_v2") *fn = Fn::kRebuildTensorV2;
  else if (module == "torch._utils" && name == "_rebuild_parameter") *fn = Fn::kRebuildParameter;
  else if (module == "torch._utils" && name == "_rebuild_parameter_with_state") *fn = Fn::kRebuildParameterWithState;
  else if (module == "torch") {
    *fn = Fn::kStorage;
    if (name == "FloatStorage") *dtype = DType::kF32;
    else if (name == "HalfStorage") *dtype = DType::kF16;
    else if (name == "BFloat16Storage") *dtype = DType::kBF16;
    else if (name == "IntStorage") *dtype = DType::kI32;
    else if (name == "LongStorage") *dtype = DType::kI64;
    else return false;
  } else {
    return false;
  }
  return true;
}

class Unpickler {
 public:
  Unpickler(const uint8_t* d, size_t n, const std::string& source) : d_(d), n_(n), src_(source) {}

  PObj* run() {
    while (true) {
      if (pos_ >= n_) fail_at(n_, "pickle ends without a STOP opcode (truncated?)");
      op_pos_ = pos_;
      const uint8_t op = d_[pos_++];
      switch (op) {
        case 0x80: {  // PROTO
          const uint8_t v = take(1)[0];
          if (v > 5) fail("unsupported pickle protocol " + std::to_string(v));
          break;
        }
        case 0x95: {  // FRAME: a length prefix for the opcodes that follow; only checked
          const uint64_t len = load_le64(take(8));
          if (len > n_ - pos_) fail("frame of " + std::to_string(len) + " bytes runs past the end of the pickle");
          break;
        }
        case '.': {  // STOP
          if (stack_.size() != 1 || !marks_.empty())
            fail("STOP with " + std::to_string(stack_.size()) + " values on the stack (expected 1)");
          return stack_.back();
        }
        case '(': marks_.push_back(stack_.size()); break;  // MARK
        case '}': push(make(PObj::Kind::kDict)); break;    // EMPTY_DICT
        case ']': push(make(PObj::Kind::kList)); break;    // EMPTY_LIST
        case ')': push(make(PObj::Kind::kTuple)); break;   // EMPTY_TUPLE
        case 'N': push(make(PObj::Kind::kNone)); break;    // NONE
        case 0x88:                                          // NEWTRUE
        case 0x89: {                                        // NEWFALSE
          PObj* b = make(PObj::Kind::kBool);
          b->i = op == 0x88;
          push(b);
          break;
        }
        case 'J': {  // BININT: signed 32-bit
          const uint32_t u = load_le32(take(4));
          push_int(static_cast<int32_t>(u));
          break;
        }
        case 'K': push_int(take(1)[0]); break;   // BININT1
        case 'M': push_int(load_le16(take(2))); break;  // BININT2
        case 0x8a: {  // LONG1: n-byte little-endian two's complement
          const uint8_t len = take(1)[0];
          if (len > 8) fail("integer of " + std::to_string(len) + " bytes is too large");
          const uint8_t* b = take(len);
          uint64_t u = 0;
          for (int k = len - 1; k >= 0; --k) u = (u << 8) | b[k];
          if (len > 0 && len < 8 && (b[len - 1] & 0x80)) u |= ~uint64_t{0} << (8 * len);  // sign-extend
          push_int(static_cast<int64_t>(u));
          break;
        }
        case 'G': {  // BINFLOAT: big-endian double (only kept as a value; never used for tensors)
          const uint8_t* b = take(8);
          uint64_t u = 0;
          for (int k = 0; k < 8; ++k) u = (u << 8) | b[k];
          PObj* f = make(PObj::Kind::kFloat);
          f->i = static_cast<int64_t>(u);
          push(f);
          break;
        }
        case 'X': push_str(load_le32(take(4))); break;     // BINUNICODE
        case 0x8c: push_str(take(1)[0]); break;       // SHORT_BINUNICODE
        case 0x8d: push_str(load_le64(take(8))); break;    // BINUNICODE8
        case 'q': memo_put(take(1)[0]); break;        // BINPUT
        case 'r': memo_put(load_le32(take(4))); break;     // LONG_BINPUT
        case 0x94: memo_put(memo_.size()); break;     // MEMOIZE
        case 'h': memo_get(take(1)[0]); break;        // BINGET
        case 'j': memo_get(load_le32(take(4))); break;     // LONG_BINGET
        case 'c': {  // GLOBAL "module\nname\n"
          const std::string module = line(), name = line();
          push_global(module, name);
          break;
        }
        case 0x93: {  // STACK_GLOBAL
          PObj* name = pop();
          PObj* module = pop();
          if (module->kind != PObj::Kind::kStr || name->kind != PObj::Kind::kStr)
            fail("STACK_GLOBAL needs two strings");
          push_global(module->s, name->s);
          break;
        }
        case 't': push(tuple_from(pop_mark())); break;  // TUPLE
        case 0x85: push(tuple_from(pop_n(1))); break;  // TUPLE1
        case 0x86: push(tuple_from(pop_n(2))); break;  // TUPLE2
        case 0x87: push(tuple_from(pop_n(3))); break;  // TUPLE3
        case 'l': {  // LIST
          PObj* l = make(PObj::Kind::kList);
          l->items = pop_mark();
          push(l);
          break;
        }
        case 'd': {  // DICT
          PObj* m = make(PObj::Kind::kDict);
          set_items(m, pop_mark());
          push(m);
          break;
        }
        case 's': {  // SETITEM
          PObj* v = pop();
          PObj* k = pop();
          set_items(top(PObj::Kind::kDict, "SETITEM"), {k, v});
          break;
        }
        case 'u': {  // SETITEMS
          std::vector<PObj*> kv = pop_mark();
          set_items(top(PObj::Kind::kDict, "SETITEMS"), kv);
          break;
        }
        case 'a': {  // APPEND
          PObj* v = pop();
          top(PObj::Kind::kList, "APPEND")->items.push_back(v);
          break;
        }
        case 'e': {  // APPENDS
          std::vector<PObj*> vs = pop_mark();
          PObj* l = top(PObj::Kind::kList, "APPENDS");
          l->items.insert(l->items.end(), vs.begin(), vs.end());
          break;
        }
        case 'Q': push(persistent_load(pop())); break;  // BINPERSID
        case 'R': {  // REDUCE
          PObj* args = pop();
          PObj* fn = pop();
          push(reduce(fn, args));
          break;
        }
        case 'b': {  // BUILD: only an OrderedDict's attributes (state_dict()._metadata), ignored
          PObj* state = pop();
          PObj* obj = top();
          if (obj->kind != PObj::Kind::kDict || (state->kind != PObj::Kind::kDict && state->kind != PObj::Kind::kNone))
            fail(std::string("BUILD of a ") + kind_name(obj->kind) + " with a " + kind_name(state->kind) +
                 " state is not supported");
          break;
        }
        default:
          fail_at(op_pos_, "unsupported pickle opcode " + hex2(op) + " at offset " + std::to_string(op_pos_));
      }
    }
  }

 private:
  const uint8_t* d_;
  size_t n_;
  std::string src_;
  size_t pos_ = 0, op_pos_ = 0;
  std::deque<PObj> arena_;  // owns every object (cycles are harmless)
  std::vector<PObj*> stack_;
  std::vector<size_t> marks_;
  std::unordered_map<uint64_t, PObj*> memo_;
  std::map<std::string, PObj*> storages_;  // by key: views of one storage share it

  [[noreturn]] void fail_at(size_t, const std::string& m) const { throw Error(src_ + ": " + m); }
  [[noreturn]] void fail(const std::string& m) const {
    throw Error(src_ + ": " + m + " (pickle opcode at offset " + std::to_string(op_pos_) + ")");
  }

  const uint8_t* take(uint64_t len) {
    if (len > n_ - pos_)
      fail("pickle is truncated: need " + std::to_string(len) + " bytes at offset " + std::to_string(pos_) +
           ", have " + std::to_string(n_ - pos_));
    const uint8_t* p = d_ + pos_;
    pos_ += static_cast<size_t>(len);
    return p;
  }
  std::string line() {
    constexpr size_t kMax = 512;
    const size_t start = pos_;
    while (pos_ < n_ && d_[pos_] != '\n') {
      if (pos_ - start > kMax) fail("GLOBAL name is too long");
      ++pos_;
    }
    if (pos_ >= n_) fail("pickle is truncated inside a GLOBAL name");
    std::string s(reinterpret_cast<const char*>(d_ + start), pos_ - start);
    ++pos_;
    return s;
  }

  PObj* make(PObj::Kind k) {
    arena_.emplace_back();
    arena_.back().kind = k;
    return &arena_.back();
  }
  void push(PObj* o) { stack_.push_back(o); }
  void push_int(int64_t v) {
    PObj* o = make(PObj::Kind::kInt);
    o->i = v;
    push(o);
  }
  void push_str(uint64_t len) {
    const uint8_t* b = take(len);
    PObj* o = make(PObj::Kind::kStr);
    o->s.assign(reinterpret_cast<const char*>(b), static_cast<size_t>(len));
    push(o);
  }
  size_t floor() const { return marks_.empty() ? 0 : marks_.back(); }
  PObj* top() {
    if (stack_.size() <= floor()) fail("pickle stack underflow");
    return stack_.back();
  }
  PObj* top(PObj::Kind k, const char* op) {
    PObj* o = top();
    if (o->kind != k) fail(std::string(op) + " on a " + kind_name(o->kind) + " (expected a " + kind_name(k) + ")");
    return o;
  }
  PObj* pop() {
    PObj* o = top();
    stack_.pop_back();
    return o;
  }
  std::vector<PObj*> pop_n(size_t k) {
    if (stack_.size() < floor() + k) fail("pickle stack underflow");
    std::vector<PObj*> r(stack_.end() - static_cast<ptrdiff_t>(k), stack_.end());
    stack_.resize(stack_.size() - k);
    return r;
  }
  std::vector<PObj*> pop_mark() {
    if (marks_.empty()) fail("no MARK on the pickle stack");
    const size_t m = marks_.back();
    marks_.pop_back();
    std::vector<PObj*> r(stack_.begin() + static_cast<ptrdiff_t>(m), stack_.end());
    stack_.resize(m);
    return r;
  }
  PObj* tuple_from(std::vector<PObj*> items) {
    PObj* t = make(PObj::Kind::kTuple);
    t->items = std::move(items);
    return t;
  }
  void set_items(PObj* dict, const std::vector<PObj*>& kv) {
    if (kv.size() % 2 != 0) fail("odd number of items for a dict");
    for (size_t k = 0; k < kv.size(); k += 2) dict->dict.emplace_back(kv[k], kv[k + 1]);
  }
  void memo_put(uint64_t idx) {
    if (stack_.empty()) fail("memo store with an empty stack");
    memo_[idx] = stack_.back();
  }
  void memo_get(uint64_t idx) {
    auto it = memo_.find(idx);
    if (it == memo_.end()) fail("memo key " + std::to_string(idx) + " is not defined");
    push(it->second);
  }
  void push_global(const std::string& module, const std::string& name) {
    PObj* g = make(PObj::Kind::kGlobal);
    if (!lookup_global(module, name, &g->fn, &g->dtype))
      fail("global " + q(module + "." + name) + " is not allowed (only torch tensors, storages of F32, F16, "
           "BF16, I32, I64 and OrderedDict)");
    g->s = module + "." + name;
    push(g);
  }

  int64_t as_int(const PObj* o, const char* what) const {
    if (o->kind != PObj::Kind::kInt) fail(std::string(what) + " is a " + kind_name(o->kind) + ", expected an int");
    return o->i;
  }
  std::vector<int64_t> as_ints(const PObj* o, const char* what) const {
    if (o->kind != PObj::Kind::kTuple) fail(std::string(what) + " is a " + kind_name(o->kind) + ", expected a tuple");
    if (o->items.size() > 64) fail(std::string(what) + " has " + std::to_string(o->items.size()) + " dimensions");
    std::vector<int64_t> r;
    for (const PObj* x : o->items) r.push_back(as_int(x, what));
    return r;
  }

  // BINPERSID: ('storage', storage class, key, location, numel) -> the (shared) storage.
  PObj* persistent_load(PObj* pid) {
    if (pid->kind != PObj::Kind::kTuple || pid->items.size() != 5 || pid->items[0]->kind != PObj::Kind::kStr ||
        pid->items[0]->s != "storage")
      fail("persistent id is not ('storage', type, key, location, size)");
    const PObj* type = pid->items[1];
    const PObj* key = pid->items[2];
    if (type->kind != PObj::Kind::kGlobal || type->fn != Fn::kStorage)
      fail("persistent id: storage type is not a storage class");
    if (key->kind != PObj::Kind::kStr) fail("persistent id: storage key is not a string");
    if (pid->items[3]->kind != PObj::Kind::kStr) fail("persistent id: location is not a string");
    const int64_t numel = as_int(pid->items[4], "storage size");
    if (numel < 0) fail("storage " + q(key->s) + " has negative size " + std::to_string(numel));
    auto it = storages_.find(key->s);
    if (it != storages_.end()) {
      if (it->second->t.dtype != type->dtype || it->second->t.storage_numel != numel)
        fail("storage " + q(key->s) + " is described twice differently");
      return it->second;
    }
    PObj* s = make(PObj::Kind::kStorage);
    s->t.dtype = type->dtype;
    s->t.storage_key = key->s;
    s->t.storage_numel = numel;
    storages_.emplace(key->s, s);
    return s;
  }

  PObj* reduce(PObj* fn, PObj* args) {
    if (fn->kind != PObj::Kind::kGlobal) fail(std::string("REDUCE of a ") + kind_name(fn->kind));
    if (args->kind != PObj::Kind::kTuple) fail(std::string("REDUCE with ") + kind_name(args->kind) + " arguments");
    const std::vector<PObj*>& a = args->items;
    switch (fn->fn) {
      case Fn::kOrderedDict:
        if (!a.empty()) fail("collections.OrderedDict called with arguments");
        return make(PObj::Kind::kDict);
      case Fn::kRebuildTensorV2: {
        // (storage, storage_offset, size, stride, requires_grad, backward_hooks[, metadata])
        if (a.size() != 6 && a.size() != 7) fail("_rebuild_tensor_v2 needs 6 or 7 arguments");
        if (a[0]->kind != PObj::Kind::kStorage) fail("_rebuild_tensor_v2: first argument is not a storage");
        if (a[4]->kind != PObj::Kind::kBool) fail("_rebuild_tensor_v2: requires_grad is not a bool");
        if (a[5]->kind != PObj::Kind::kDict) fail("_rebuild_tensor_v2: backward_hooks is not a dict");
        PObj* t = make(PObj::Kind::kTensor);
        t->t = a[0]->t;
        t->t.storage_offset = as_int(a[1], "storage_offset");
        t->t.shape = as_ints(a[2], "size");
        t->t.stride = as_ints(a[3], "stride");
        return t;
      }
      case Fn::kRebuildParameter:
      case Fn::kRebuildParameterWithState:
        // (data, requires_grad, backward_hooks[, state]): the parameter is its data tensor.
        if (a.size() != (fn->fn == Fn::kRebuildParameter ? 3u : 4u) || a[0]->kind != PObj::Kind::kTensor)
          fail(fn->s + ": unexpected arguments");
        return a[0];
      default:
        fail("global " + q(fn->s) + " cannot be called");
    }
  }
};

}  // namespace

bool is_contiguous(const std::vector<int64_t>& shape, const std::vector<int64_t>& stride) {
  if (shape.size() != stride.size()) return false;
  for (int64_t d : shape)
    if (d == 0) return true;
  int64_t expect = 1;
  for (size_t k = shape.size(); k-- > 0;) {
    if (shape[k] != 1 && stride[k] != expect) return false;
    expect *= shape[k];
  }
  return true;
}

std::map<std::string, TorchTensorRef> unpickle_state_dict(const uint8_t* data, size_t size,
                                                          const std::string& source) {
  if (data == nullptr) size = 0;
  Unpickler u(data, size, source);
  const PObj* root = u.run();
  if (root->kind != PObj::Kind::kDict)
    throw Error(source + ": the pickle holds a " + kind_name(root->kind) + ", not a state_dict (dict of tensors)");
  std::map<std::string, TorchTensorRef> out;
  for (const auto& [k, v] : root->dict) {
    if (k->kind != PObj::Kind::kStr)
      throw Error(source + ": state_dict key is a " + std::string(kind_name(k->kind)) + ", not a string");
    const std::string where = source + ": tensor " + q(k->s);
    if (v->kind != PObj::Kind::kTensor)
      throw Error(where + " is a " + kind_name(v->kind) + ", not a tensor");
    const TorchTensorRef& t = v->t;
    if (t.shape.size() != t.stride.size())
      throw Error(where + ": size " + shape_str(t.shape) + " and stride " + shape_str(t.stride) + " differ in rank");
    if (t.storage_offset < 0) throw Error(where + ": negative storage offset " + std::to_string(t.storage_offset));
    // The view touches elements offset + sum(i_k * stride_k), 0 <= i_k < size_k: check the last one.
    uint64_t numel = 1, last = static_cast<uint64_t>(t.storage_offset);
    bool overflow = false;
    for (size_t d = 0; d < t.shape.size(); ++d) {
      if (t.shape[d] < 0 || t.stride[d] < 0)
        throw Error(where + ": negative size or stride (size " + shape_str(t.shape) + ", stride " +
                    shape_str(t.stride) + ")");
      overflow |= __builtin_mul_overflow(numel, static_cast<uint64_t>(t.shape[d]), &numel);
    }
    for (size_t d = 0; d < t.shape.size() && numel > 0; ++d) {
      uint64_t span = 0;
      overflow |=
          __builtin_mul_overflow(static_cast<uint64_t>(t.shape[d] - 1), static_cast<uint64_t>(t.stride[d]), &span);
      overflow |= add_overflow(last, span, &last);
    }
    if (overflow || numel > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()))
      throw Error(where + ": size " + shape_str(t.shape) + " / stride " + shape_str(t.stride) + " overflow");
    if (numel > 0 && last >= static_cast<uint64_t>(t.storage_numel))
      throw Error(where + ": view (offset " + std::to_string(t.storage_offset) + ", size " + shape_str(t.shape) +
                  ", stride " + shape_str(t.stride) + ") needs element " + std::to_string(last) + " but storage " +
                  q(t.storage_key) + " holds " + std::to_string(t.storage_numel) + " elements");
    if (!out.emplace(k->s, t).second) throw Error(where + " appears twice in the state_dict");
  }
  return out;
}

// ---------------------------------------------------------------------------------------------------
// TorchCheckpoint

namespace {

// Converts n elements into fp32: element k is at base + (first + k * step) * element size.
void gather_f32(DType dt, const uint8_t* base, uint64_t first, int64_t step, size_t n, float* out) {
  const uint64_t st = static_cast<uint64_t>(step);
  switch (dt) {
    case DType::kF32:
      if (step == 1) {
        std::memcpy(out, base + first * 4, n * 4);
      } else {
        for (size_t k = 0; k < n; ++k) std::memcpy(out + k, base + (first + st * k) * 4, 4);
      }
      return;
    case DType::kBF16:
      for (size_t k = 0; k < n; ++k) out[k] = bf16_to_f32(load_le16(base + (first + st * k) * 2));
      return;
    case DType::kF16:
      for (size_t k = 0; k < n; ++k) out[k] = f16_to_f32(load_le16(base + (first + st * k) * 2));
      return;
    default:
      return;  // callers check the dtype
  }
}

}  // namespace

TorchCheckpoint::TorchCheckpoint(const std::string& path) : path_(path) {
  map_ = map_file_readonly(path, "PyTorch checkpoint");
  try {
    if (map_.size >= 2 && map_.data[0] == 0x80 && map_.data[1] <= 5)
      throw Error(path_ + ": a legacy (pre-zip, torch < 1.6) torch.save file; only the zip format is supported "
                  "(re-save it with a recent torch, or convert it to safetensors)");
    if (map_.size < 4 || load_le32(map_.data) != kLocalSig)
      throw Error(path_ + ": not a PyTorch zip checkpoint (no zip signature at the start)");
    const ZipArchive zip(map_.data, map_.size, path_);

    // The one <prefix>/data.pkl.
    const ZipEntry* pkl = nullptr;
    std::string prefix;
    for (const ZipEntry& e : zip.entries()) {
      const size_t slash = e.name.find('/');
      if (slash == std::string::npos || e.name.compare(slash, std::string::npos, "/data.pkl") != 0) continue;
      if (pkl) throw Error(path_ + ": the zip archive holds two pickles (" + q(pkl->name) + ", " + q(e.name) + ")");
      pkl = &e;
      prefix = e.name.substr(0, slash);
    }
    if (!pkl) throw Error(path_ + ": the zip archive has no <name>/data.pkl entry: not a torch.save checkpoint");
    if (const ZipEntry* bo = zip.find(prefix + "/byteorder")) {
      const uint8_t* b = zip.data(*bo);
      const std::string order(reinterpret_cast<const char*>(b), static_cast<size_t>(bo->size));
      if (order != "little") throw Error(path_ + ": byte order " + q(order) + " is not supported (only little)");
    }
    const uint8_t* pdata = zip.data(*pkl, /*verify_crc=*/true);
    const std::map<std::string, TorchTensorRef> refs =
        unpickle_state_dict(pdata, static_cast<size_t>(pkl->size), path_ + " (" + pkl->name + ")");

    for (const auto& [name, ref] : refs) {
      const std::string entry_name = prefix + "/data/" + ref.storage_key;
      const ZipEntry* e = zip.find(entry_name);
      if (!e)
        throw Error(path_ + ": tensor " + q(name) + ": storage " + q(ref.storage_key) + " (zip entry " +
                    q(entry_name) + ") is missing");
      uint64_t need = 0;
      if (__builtin_mul_overflow(static_cast<uint64_t>(ref.storage_numel), dtype_size(ref.dtype), &need) ||
          e->size < need)
        throw Error(path_ + ": tensor " + q(name) + ": storage " + q(ref.storage_key) + " has " +
                    std::to_string(e->size) + " bytes, too small for the " + std::to_string(ref.storage_numel) +
                    " " + dtype_name(ref.dtype) + " elements the pickle says it holds");
      tensors_.emplace(name, Entry{ref, zip.data(*e)});
    }
  } catch (...) {
    unmap_file(map_);
    throw;
  }
}

TorchCheckpoint::~TorchCheckpoint() { unmap_file(map_); }

std::vector<std::string> TorchCheckpoint::names() const {
  std::vector<std::string> r;
  r.reserve(tensors_.size());
  for (const auto& kv : tensors_) r.push_back(kv.first);
  return r;
}

const TorchCheckpoint::Entry& TorchCheckpoint::entry(const std::string& name) const {
  auto it = tensors_.find(name);
  if (it == tensors_.end()) throw Error(path_ + ": no tensor named " + q(name));
  return it->second;
}

const TorchTensorRef& TorchCheckpoint::info(const std::string& name) const { return entry(name).ref; }

const uint8_t* TorchCheckpoint::mapped(const std::string& name) const {
  const Entry& e = entry(name);
  if (!is_contiguous(e.ref.shape, e.ref.stride)) return nullptr;
  return e.storage + static_cast<uint64_t>(e.ref.storage_offset) * dtype_size(e.ref.dtype);
}

void TorchCheckpoint::read_f32(const std::string& name, float* out) const {
  const Entry& e = entry(name);
  const TorchTensorRef& r = e.ref;
  if (r.dtype != DType::kF32 && r.dtype != DType::kF16 && r.dtype != DType::kBF16)
    throw Error(path_ + ": tensor " + q(name) + " has dtype " + dtype_name(r.dtype) + "; expected F32, F16 or BF16");
  const size_t numel = Tensor::numel_of(r.shape);  // validated on open: fits and lies inside the storage
  if (numel == 0) return;
  if (is_contiguous(r.shape, r.stride)) {
    gather_f32(r.dtype, e.storage, static_cast<uint64_t>(r.storage_offset), 1, numel, out);
    return;
  }
  // Strided view: walk the outer indices, gather the innermost dimension.
  const size_t nd = r.shape.size();
  const size_t inner = static_cast<size_t>(r.shape[nd - 1]);
  const int64_t inner_stride = r.stride[nd - 1];
  std::vector<int64_t> idx(nd, 0);
  for (size_t done = 0; done < numel; done += inner) {
    uint64_t off = static_cast<uint64_t>(r.storage_offset);
    for (size_t k = 0; k + 1 < nd; ++k) off += static_cast<uint64_t>(idx[k] * r.stride[k]);
    gather_f32(r.dtype, e.storage, off, inner_stride, inner, out + done);
    for (size_t k = nd - 1; k-- > 0;) {
      if (++idx[k] < r.shape[k]) break;
      idx[k] = 0;
    }
  }
}

}  // namespace moepp::io
