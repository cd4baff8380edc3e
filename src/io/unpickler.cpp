// The restricted state_dict unpickler (see unpickler.h): a pickle interpreter over an arena of plain
// objects that knows only the opcodes and the whitelisted globals a torch.save state_dict needs, then
// the checks of every tensor view against its storage.
#include "io/unpickler.h"

#include <cstdio>
#include <deque>
#include <limits>
#include <unordered_map>
#include <utility>

#include "core/error.h"
#include "core/little_endian.h"
#include "core/tensor.h"
#include "io/quoted_name.h"

namespace moepp::io {
namespace {

std::string hex2(unsigned v) {
  char buf[8];
  std::snprintf(buf, sizeof buf, "0x%02x", v & 0xFFu);
  return buf;
}

// Limits (docs/limits.md). A torch.save state_dict needs about 25 objects per tensor and MARKs nested
// 3 deep; these admit 80,000 tensors and keep the interpreter's memory (about 200 bytes an object)
// under half a GiB whatever the pickle declares.
constexpr size_t kMaxObjects = size_t{1} << 21;  // objects made, memo entries included
constexpr size_t kMaxMarks = 1024;               // MARK nesting depth

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
        case '(':  // MARK
          if (marks_.size() >= kMaxMarks) fail("MARKs nested deeper than " + std::to_string(kMaxMarks));
          marks_.push_back(stack_.size());
          break;
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
    if (arena_.size() + memo_.size() >= kMaxObjects)
      fail("pickle makes more than " + std::to_string(kMaxObjects) + " objects (limit for a state_dict)");
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
    if (arena_.size() + memo_.size() >= kMaxObjects)
      fail("pickle memoizes more than " + std::to_string(kMaxObjects) + " objects (limit for a state_dict)");
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
      fail("global " + quoted_name(module + "." + name) +
           " is not allowed (only torch tensors, storages of F32, F16, BF16, I32, I64 and OrderedDict)");
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
    if (numel < 0) fail("storage " + quoted_name(key->s) + " has negative size " + std::to_string(numel));
    auto it = storages_.find(key->s);
    if (it != storages_.end()) {
      if (it->second->t.dtype != type->dtype || it->second->t.storage_numel != numel)
        fail("storage " + quoted_name(key->s) + " is described twice differently");
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
        fail("global " + quoted_name(fn->s) + " cannot be called");
    }
  }
};

}  // namespace

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
    const std::string where = source + ": tensor " + quoted_name(k->s);
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
      overflow |= __builtin_add_overflow(last, span, &last);
    }
    if (overflow || numel > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()))
      throw Error(where + ": size " + shape_str(t.shape) + " / stride " + shape_str(t.stride) + " overflow");
    // A view may not hold more elements than its storage (only an overlapping view, a stride of 0,
    // could): the tensor's size is then bounded by the file's.
    if (numel > static_cast<uint64_t>(t.storage_numel))
      throw Error(where + ": size " + shape_str(t.shape) + " has " + std::to_string(numel) + " elements, but storage " +
                  quoted_name(t.storage_key) + " holds " + std::to_string(t.storage_numel) +
                  " (overlapping views are not supported)");
    if (numel > 0 && last >= static_cast<uint64_t>(t.storage_numel))
      throw Error(where + ": view (offset " + std::to_string(t.storage_offset) + ", size " + shape_str(t.shape) +
                  ", stride " + shape_str(t.stride) + ") needs element " + std::to_string(last) + " but storage " +
                  quoted_name(t.storage_key) + " holds " + std::to_string(t.storage_numel) + " elements");
    if (!out.emplace(k->s, t).second) throw Error(where + " appears twice in the state_dict");
  }
  return out;
}

}  // namespace moepp::io
