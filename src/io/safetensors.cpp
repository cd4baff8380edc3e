// Safetensors implementation: header parsing and validation (nlohmann-json), the memory-mapped reader
// (SafetensorsFile), sharded models (SafetensorsModel, model.safetensors.index.json) and the writer
// (SafetensorsWriter, write_sharded; files written by io::write_file_atomic).
#include "io/safetensors.h"
#include "io/mapped_file.h"

#include <sys/mman.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <set>
#include <utility>

#include <nlohmann/json.hpp>

#include "core/half_float.h"
#include "core/little_endian.h"
#include "io/file.h"

static_assert(std::endian::native == std::endian::little, "safetensors I/O assumes a little-endian host");

namespace moepp::io {

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

constexpr uint64_t kMaxHeaderBytes = 100ull * 1000 * 1000;  // larger headers are rejected as absurd
constexpr int kMaxJsonDepth = 16;                          // the format needs 3

// A name quoted for messages; very long (hostile) names are shortened.
std::string q(const std::string& s) {
  constexpr size_t kMax = 200;
  if (s.size() <= kMax) return "'" + s + "'";
  return "'" + s.substr(0, kMax) + "...' (" + std::to_string(s.size()) + " bytes)";
}

[[noreturn]] void fail(const std::string& source, const std::string& msg) { throw Error(source + ": " + msg); }

std::string errno_text(int e) { return std::strerror(e); }

bool mul_overflow(uint64_t a, uint64_t b, uint64_t* out) { return __builtin_mul_overflow(a, b, out); }

// A non-negative JSON integer as uint64 (false for anything else: floats, negatives, strings...).
bool as_u64(const json& v, uint64_t* out) {
  if (v.is_number_unsigned()) {
    *out = v.get<uint64_t>();
    return true;
  }
  if (v.is_number_integer()) {
    const int64_t i = v.get<int64_t>();
    if (i < 0) return false;
    *out = static_cast<uint64_t>(i);
    return true;
  }
  return false;
}

// Parses JSON text, rejecting duplicate object keys and nesting deeper than kMaxJsonDepth.
json parse_json_strict(const uint8_t* first, const uint8_t* last, const std::string& source, const char* what) {
  std::vector<std::set<std::string>> keys;  // one key set per open object
  auto cb = [&](int depth, json::parse_event_t ev, json& parsed) -> bool {
    switch (ev) {
      case json::parse_event_t::object_start:
      case json::parse_event_t::array_start:
        if (depth >= kMaxJsonDepth) fail(source, std::string(what) + " is nested too deeply");
        if (ev == json::parse_event_t::object_start) keys.emplace_back();
        break;
      case json::parse_event_t::key: {
        const std::string& k = parsed.get_ref<const std::string&>();
        if (!keys.empty() && !keys.back().insert(k).second)
          fail(source, std::string(what) + " has the key " + q(k) + " twice");
        break;
      }
      case json::parse_event_t::object_end:
        if (!keys.empty()) keys.pop_back();
        break;
      default:
        break;
    }
    return true;
  };
  // nlohmann-json stops at a NUL byte as if the input ended there; valid JSON never holds one.
  if (std::memchr(first, 0, static_cast<size_t>(last - first)) != nullptr)
    fail(source, std::string(what) + " is not valid JSON: it contains a NUL byte");
  try {
    return json::parse(first, last, cb, /*allow_exceptions=*/true, /*ignore_comments=*/false);
  } catch (const json::exception& e) {
    fail(source, std::string(what) + " is not valid JSON: " + e.what());
  }
}

// Checked numel * dtype size for a validated (non-negative) shape; false on overflow.
bool checked_nbytes(const std::vector<int64_t>& shape, size_t elem, uint64_t* out) {
  uint64_t n = elem;
  for (int64_t d : shape) {
    if (d < 0 || mul_overflow(n, static_cast<uint64_t>(d), &n)) return false;
  }
  *out = n;
  return true;
}

uint64_t numel_u64(const std::vector<int64_t>& shape) {
  uint64_t n = 1;
  for (int64_t d : shape) n *= static_cast<uint64_t>(d);  // validated by parse_header: cannot overflow
  return n;
}

TensorInfo parse_entry(const std::string& name, const json& e, uint64_t data_size, const std::string& source) {
  const std::string where = "tensor " + q(name);
  if (!e.is_object()) fail(source, where + ": entry is not a JSON object");
  for (const auto& [k, v] : e.items()) {
    (void)v;
    if (k != "dtype" && k != "shape" && k != "data_offsets") fail(source, where + ": unknown field " + q(k));
  }
  for (const char* k : {"dtype", "shape", "data_offsets"}) {
    if (!e.contains(k)) fail(source, where + ": missing field '" + k + "'");
  }
  TensorInfo info{};

  const json& dt = e["dtype"];
  if (!dt.is_string()) fail(source, where + ": field 'dtype' is not a string");
  const std::string& dts = dt.get_ref<const std::string&>();
  if (!parse_dtype(dts, &info.dtype))
    fail(source, where + ": unsupported dtype " + q(dts) + " (supported: F32, F16, BF16, I32, I64, I8, U8)");

  const json& sh = e["shape"];
  if (!sh.is_array()) fail(source, where + ": field 'shape' is not a list");
  for (size_t i = 0; i < sh.size(); ++i) {
    uint64_t d = 0;
    if (!as_u64(sh[i], &d) || d > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()))
      fail(source, where + ": field 'shape' element " + std::to_string(i) + " is not a non-negative integer");
    info.shape.push_back(static_cast<int64_t>(d));
  }

  const json& off = e["data_offsets"];
  if (!off.is_array() || off.size() != 2 || !as_u64(off[0], &info.begin) || !as_u64(off[1], &info.end))
    fail(source, where + ": field 'data_offsets' is not a list of 2 non-negative integers");
  if (info.begin > info.end)
    fail(source, where + ": field 'data_offsets' begin " + std::to_string(info.begin) + " > end " +
                     std::to_string(info.end));
  if (info.end > data_size)
    fail(source, where + ": field 'data_offsets' end " + std::to_string(info.end) +
                     " is beyond the data buffer (" + std::to_string(data_size) + " bytes)");

  uint64_t nbytes = 0;
  if (!checked_nbytes(info.shape, dtype_size(info.dtype), &nbytes))
    fail(source, where + ": shape " + shape_str(info.shape) + " is too large (size overflows)");
  if (info.end - info.begin != nbytes)
    fail(source, where + ": field 'data_offsets' spans " + std::to_string(info.end - info.begin) +
                     " bytes but shape " + shape_str(info.shape) + " of " + dtype_name(info.dtype) + " needs " +
                     std::to_string(nbytes));
  return info;
}

bool is_regular_file(const std::string& p) {
  std::error_code ec;
  return fs::is_regular_file(p, ec);
}

std::string read_small_file(const std::string& path, uint64_t max_bytes) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error("cannot open " + path + ": " + errno_text(errno));
  in.seekg(0, std::ios::end);
  const std::streamoff size = in.tellg();
  if (size < 0) throw Error("cannot read " + path);
  if (static_cast<uint64_t>(size) > max_bytes)
    throw Error(path + ": file is too large (" + std::to_string(size) + " bytes)");
  in.seekg(0);
  std::string s(static_cast<size_t>(size), '\0');
  if (size > 0 && !in.read(s.data(), size)) throw Error("cannot read " + path);
  return s;
}

}  // namespace

// ---------------------------------------------------------------------------------------------------
// Header parsing

Header parse_header(const uint8_t* bytes, size_t available, uint64_t file_size, const std::string& source) {
  if (file_size < 8 || available < 8 || bytes == nullptr)
    fail(source, "file is too short for a safetensors header (" + std::to_string(file_size) + " bytes, need >= 8)");
  const uint64_t n = load_le64(bytes);
  if (n > kMaxHeaderBytes)
    fail(source, "header length " + std::to_string(n) + " is absurd (limit " + std::to_string(kMaxHeaderBytes) +
                     " bytes); not a safetensors file?");
  if (n > file_size - 8)
    fail(source, "header length " + std::to_string(n) + " is larger than the file (" + std::to_string(file_size) +
                     " bytes)");
  if (n > available - 8)
    fail(source, "header length " + std::to_string(n) + " but only " + std::to_string(available - 8) +
                     " header bytes were read");

  Header h;
  h.data_start = 8 + n;
  const uint64_t data_size = file_size - h.data_start;
  const json root = parse_json_strict(bytes + 8, bytes + 8 + n, source, "header");
  if (!root.is_object()) fail(source, "header is not a JSON object");

  for (const auto& [name, entry] : root.items()) {
    if (name == "__metadata__") {
      if (!entry.is_object()) fail(source, "field '__metadata__' is not an object");
      for (const auto& [k, v] : entry.items()) {
        if (!v.is_string()) fail(source, "field '__metadata__' entry " + q(k) + " is not a string");
        h.metadata[k] = v.get<std::string>();
      }
      continue;
    }
    h.tensors.emplace(name, parse_entry(name, entry, data_size, source));
  }

  // No two tensors may share bytes (empty tensors occupy none).
  std::vector<std::pair<const std::string*, const TensorInfo*>> order;
  order.reserve(h.tensors.size());
  for (const auto& [name, info] : h.tensors)
    if (info.end > info.begin) order.emplace_back(&name, &info);
  std::sort(order.begin(), order.end(), [](const auto& a, const auto& b) {
    return a.second->begin != b.second->begin ? a.second->begin < b.second->begin : *a.first < *b.first;
  });
  for (size_t i = 1; i < order.size(); ++i) {
    if (order[i].second->begin < order[i - 1].second->end)
      fail(source, "tensor " + q(*order[i].first) + " overlaps tensor " + q(*order[i - 1].first) +
                       " in the data buffer");
  }
  return h;
}

// ---------------------------------------------------------------------------------------------------
// SafetensorsFile

SafetensorsFile::SafetensorsFile(const std::string& path) : path_(path) {
  {
    const FileMapping m = map_file_readonly(path);
    map_ = m.data;
    map_size_ = m.size;
  }
  try {
    header_ = parse_header(map_, map_size_, map_size_, path_);
  } catch (...) {
    if (map_) ::munmap(const_cast<uint8_t*>(map_), map_size_);
    map_ = nullptr;
    throw;
  }
}

SafetensorsFile::~SafetensorsFile() {
  if (map_) ::munmap(const_cast<uint8_t*>(map_), map_size_);
}

std::vector<std::string> SafetensorsFile::names() const {
  std::vector<std::string> r;
  r.reserve(header_.tensors.size());
  for (const auto& kv : header_.tensors) r.push_back(kv.first);
  return r;  // std::map order: sorted
}

const TensorInfo& SafetensorsFile::info(const std::string& name) const {
  auto it = header_.tensors.find(name);
  if (it == header_.tensors.end()) fail(path_, "no tensor named " + q(name));
  return it->second;
}

const uint8_t* SafetensorsFile::raw(const std::string& name) const {
  const TensorInfo& i = info(name);
  return map_ + header_.data_start + i.begin;
}

Tensor SafetensorsFile::read_f32(const std::string& name) const {
  const TensorInfo& i = info(name);
  if (i.dtype != DType::kF32 && i.dtype != DType::kF16 && i.dtype != DType::kBF16)
    fail(path_, "tensor " + q(name) + " has dtype " + dtype_name(i.dtype) + "; expected F32, F16 or BF16");
  Tensor t;
  t.shape = i.shape;
  t.data.resize(static_cast<size_t>(numel_u64(i.shape)));
  convert_to_f32(i.dtype, raw(name), t.data.size(), t.data.data());
  return t;
}

std::vector<int32_t> SafetensorsFile::read_i32(const std::string& name) const {
  const TensorInfo& i = info(name);
  const size_t n = static_cast<size_t>(numel_u64(i.shape));
  const uint8_t* src = raw(name);
  std::vector<int32_t> out(n);
  if (i.dtype == DType::kI32) {
    if (n) std::memcpy(out.data(), src, n * 4);
  } else if (i.dtype == DType::kI64) {
    for (size_t k = 0; k < n; ++k) {
      int64_t v;
      std::memcpy(&v, src + 8 * k, 8);
      if (v < std::numeric_limits<int32_t>::min() || v > std::numeric_limits<int32_t>::max())
        fail(path_, "tensor " + q(name) + " element " + std::to_string(k) + " = " + std::to_string(v) +
                        " does not fit in int32");
      out[k] = static_cast<int32_t>(v);
    }
  } else {
    fail(path_, "tensor " + q(name) + " has dtype " + dtype_name(i.dtype) + "; expected I32 or I64");
  }
  return out;
}

// ---------------------------------------------------------------------------------------------------
// SafetensorsModel

SafetensorsModel::SafetensorsModel(const std::string& path) : path_(path) {
  std::error_code ec;
  const fs::file_status st = fs::status(path, ec);
  if (ec || !fs::exists(st)) throw Error("cannot open model " + path + ": no such file or directory");

  std::string index_path;
  if (fs::is_directory(st)) {
    const std::string single = (fs::path(path) / "model.safetensors").string();
    const std::string index = (fs::path(path) / "model.safetensors.index.json").string();
    if (is_regular_file(single)) {
      shards_.push_back(std::make_unique<SafetensorsFile>(single));
    } else if (is_regular_file(index)) {
      index_path = index;
    } else {
      throw Error("model directory " + path + " holds neither model.safetensors nor model.safetensors.index.json");
    }
  } else if (fs::path(path).extension() == ".json") {
    index_path = path;
  } else {
    shards_.push_back(std::make_unique<SafetensorsFile>(path));
  }

  if (index_path.empty()) {
    for (const auto& kv : shards_[0]->header().tensors) where_[kv.first] = 0;
    return;
  }

  const std::string text = read_small_file(index_path, kMaxHeaderBytes);
  const auto* b = reinterpret_cast<const uint8_t*>(text.data());
  const json root = parse_json_strict(b, b + text.size(), index_path, "index");
  if (!root.is_object()) fail(index_path, "index is not a JSON object");
  if (root.contains("metadata") && !root["metadata"].is_object()) fail(index_path, "field 'metadata' is not an object");
  if (!root.contains("weight_map")) fail(index_path, "missing field 'weight_map'");
  const json& wm = root["weight_map"];
  if (!wm.is_object()) fail(index_path, "field 'weight_map' is not an object");

  const fs::path base = fs::path(index_path).parent_path();
  std::map<std::string, size_t> shard_ids;  // shard file name -> index in shards_
  for (const auto& [name, file] : wm.items()) {
    if (!file.is_string()) fail(index_path, "field 'weight_map' entry " + q(name) + " is not a string");
    const std::string& f = file.get_ref<const std::string&>();
    if (f.empty() || fs::path(f).is_absolute())
      fail(index_path, "field 'weight_map' entry " + q(name) + ": shard file name " + q(f) +
                           " must be a non-empty relative path");
    auto it = shard_ids.find(f);
    if (it == shard_ids.end()) {
      const std::string shard_path = (base / f).string();
      if (!is_regular_file(shard_path))
        fail(index_path, "tensor " + q(name) + " is in shard " + q(f) + ", but " + shard_path + " does not exist");
      shards_.push_back(std::make_unique<SafetensorsFile>(shard_path));
      it = shard_ids.emplace(f, shards_.size() - 1).first;
    }
    if (!shards_[it->second]->contains(name))
      fail(index_path, "tensor " + q(name) + " is listed in shard " + q(f) + ", but that shard does not hold it");
    where_[name] = it->second;
  }
}

bool SafetensorsModel::contains(const std::string& name) const { return where_.count(name) != 0; }

std::vector<std::string> SafetensorsModel::names() const {
  std::vector<std::string> r;
  r.reserve(where_.size());
  for (const auto& kv : where_) r.push_back(kv.first);
  return r;
}

const SafetensorsFile& SafetensorsModel::shard_of(const std::string& name) const {
  auto it = where_.find(name);
  if (it == where_.end()) fail(path_, "no tensor named " + q(name));
  return *shards_[it->second];
}

const TensorInfo& SafetensorsModel::info(const std::string& name) const { return shard_of(name).info(name); }
Tensor SafetensorsModel::read_f32(const std::string& name) const { return shard_of(name).read_f32(name); }
std::vector<int32_t> SafetensorsModel::read_i32(const std::string& name) const {
  return shard_of(name).read_i32(name);
}
const uint8_t* SafetensorsModel::raw(const std::string& name) const { return shard_of(name).raw(name); }

// ---------------------------------------------------------------------------------------------------
// Writing

uint64_t SafetensorsWriter::checked_size(const std::string& name, DType dtype, const std::vector<int64_t>& shape) {
  if (name == "__metadata__") throw Error("safetensors writer: the tensor name '__metadata__' is reserved");
  if (names_.count(name)) throw Error("safetensors writer: duplicate tensor name " + q(name));
  uint64_t need = 0;
  if (!checked_nbytes(shape, dtype_size(dtype), &need))
    throw Error("safetensors writer: tensor " + q(name) + ": invalid shape " + shape_str(shape));
  return need;
}

void SafetensorsWriter::add(const std::string& name, DType dtype, const std::vector<int64_t>& shape,
                            const void* data, size_t nbytes) {
  const uint64_t need = checked_size(name, dtype, shape);
  if (need != nbytes)
    throw Error("safetensors writer: tensor " + q(name) + ": " + std::to_string(nbytes) + " bytes given but shape " +
                shape_str(shape) + " of " + dtype_name(dtype) + " needs " + std::to_string(need));
  if (nbytes && data == nullptr) throw Error("safetensors writer: tensor " + q(name) + ": null data");
  Entry e{name, dtype, shape, need, {}, nullptr};
  if (nbytes) e.bytes.assign(static_cast<const uint8_t*>(data), static_cast<const uint8_t*>(data) + nbytes);
  entries_.push_back(std::move(e));
  names_.insert(name);
}

void SafetensorsWriter::add_lazy(const std::string& name, DType dtype, const std::vector<int64_t>& shape, Fill fill) {
  const uint64_t need = checked_size(name, dtype, shape);
  if (!fill) throw Error("safetensors writer: tensor " + q(name) + ": no fill function");
  entries_.push_back(Entry{name, dtype, shape, need, {}, std::move(fill)});
  names_.insert(name);
}

void SafetensorsWriter::add_f32(const std::string& name, const Tensor& t) {
  if (t.data.size() != Tensor::numel_of(t.shape))
    throw Error("safetensors writer: tensor " + q(name) + ": data size does not match shape " + shape_str(t.shape));
  add(name, DType::kF32, t.shape, t.data.data(), t.data.size() * 4);
}

void SafetensorsWriter::add_f32_ref(const std::string& name, const Tensor& t) {
  if (t.data.size() != Tensor::numel_of(t.shape))
    throw Error("safetensors writer: tensor " + q(name) + ": data size does not match shape " + shape_str(t.shape));
  const Tensor* p = &t;
  const size_t n = t.data.size();
  add_lazy(name, DType::kF32, t.shape, [p, n, name](uint8_t* out) {
    if (p->data.size() != n)
      throw Error("safetensors writer: tensor " + q(name) + " changed size between add_f32_ref() and write()");
    if (n) std::memcpy(out, p->data.data(), n * sizeof(float));
  });
}

void SafetensorsWriter::add_f32(const std::string& name, const std::vector<int64_t>& shape, const float* data) {
  uint64_t nbytes = 0;
  if (!checked_nbytes(shape, 4, &nbytes))
    throw Error("safetensors writer: tensor " + q(name) + ": invalid shape " + shape_str(shape));
  add(name, DType::kF32, shape, data, static_cast<size_t>(nbytes));
}

void SafetensorsWriter::add_bf16(const std::string& name, const Tensor& t) {
  if (t.data.size() != Tensor::numel_of(t.shape))
    throw Error("safetensors writer: tensor " + q(name) + ": data size does not match shape " + shape_str(t.shape));
  std::vector<uint16_t> h(t.data.size());
  for (size_t i = 0; i < h.size(); ++i) h[i] = f32_to_bf16(t.data[i]);
  add(name, DType::kBF16, t.shape, h.data(), h.size() * 2);
}

void SafetensorsWriter::add_i32(const std::string& name, const std::vector<int64_t>& shape, const int32_t* data) {
  uint64_t nbytes = 0;
  if (!checked_nbytes(shape, 4, &nbytes))
    throw Error("safetensors writer: tensor " + q(name) + ": invalid shape " + shape_str(shape));
  add(name, DType::kI32, shape, data, static_cast<size_t>(nbytes));
}

uint64_t SafetensorsWriter::data_bytes() const {
  uint64_t n = 0;
  for (const Entry& e : entries_) n += e.nbytes;
  return n;
}

void SafetensorsWriter::set_metadata(const std::string& key, const std::string& value) { metadata_[key] = value; }

void SafetensorsWriter::write(const std::string& path) const {
  // Data order: larger elements first (then by name), so every tensor is naturally aligned relative to
  // the 8-byte aligned data start with no gaps between tensors (as other safetensors readers require).
  std::vector<const Entry*> order;
  order.reserve(entries_.size());
  for (const Entry& e : entries_) order.push_back(&e);
  std::sort(order.begin(), order.end(), [](const Entry* a, const Entry* b) {
    const size_t sa = dtype_size(a->dtype), sb = dtype_size(b->dtype);
    return sa != sb ? sa > sb : a->name < b->name;
  });

  json header = json::object();  // std::map-backed: keys come out sorted
  uint64_t offset = 0;
  for (const Entry* e : order) {
    const uint64_t end = offset + e->nbytes;
    header[e->name] = {{"dtype", dtype_name(e->dtype)}, {"shape", e->shape}, {"data_offsets", {offset, end}}};
    offset = end;
  }
  if (!metadata_.empty()) header["__metadata__"] = metadata_;

  std::string text;
  try {
    text = header.dump();
  } catch (const json::exception& ex) {
    throw Error("cannot write " + path + ": tensor names and metadata must be valid UTF-8 (" + ex.what() + ")");
  }
  text.append((8 - text.size() % 8) % 8, ' ');
  uint8_t len[8];
  store_le64(len, static_cast<uint64_t>(text.size()));

  AtomicFileWriter f(path);
  f.write(len, 8);
  f.write(text.data(), text.size());
  std::vector<uint8_t> made;  // the lazy tensors' bytes, one at a time
  for (const Entry* e : order) {
    if (!e->fill) {
      f.write(e->bytes.data(), e->bytes.size());
      continue;
    }
    made.resize(static_cast<size_t>(e->nbytes));
    e->fill(made.data());
    f.write(made.data(), made.size());
  }
  f.commit();
}

void write_sharded(const std::string& dir, const std::vector<std::pair<std::string, Tensor>>& tensors,
                   size_t max_shard_bytes) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) throw Error("cannot create directory " + dir + ": " + ec.message());

  std::set<std::string> seen;
  std::vector<std::vector<size_t>> groups(1);  // tensor indices per shard, in the given order
  uint64_t cur = 0, total = 0;
  for (size_t i = 0; i < tensors.size(); ++i) {
    const auto& [name, t] = tensors[i];
    if (!seen.insert(name).second) throw Error("write_sharded " + dir + ": duplicate tensor name " + q(name));
    const uint64_t nb = static_cast<uint64_t>(t.data.size()) * 4;
    if (!groups.back().empty() && cur + nb > max_shard_bytes) {
      groups.emplace_back();
      cur = 0;
    }
    groups.back().push_back(i);
    cur += nb;
    total += nb;
  }

  const size_t n = groups.size();
  std::map<std::string, std::string> weight_map;
  for (size_t s = 0; s < n; ++s) {
    SafetensorsWriter w;
    for (size_t i : groups[s]) {
      w.add_f32(tensors[i].first, tensors[i].second);
      weight_map[tensors[i].first] = shard_file_name("model", s, n);
    }
    w.write((fs::path(dir) / shard_file_name("model", s, n)).string());
  }
  write_safetensors_index((fs::path(dir) / "model.safetensors.index.json").string(), weight_map, total);
}

std::string shard_file_name(const std::string& prefix, size_t i, size_t n) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "-%05zu-of-%05zu.safetensors", i + 1, n);
  return prefix + buf;
}

void write_safetensors_index(const std::string& path, const std::map<std::string, std::string>& weight_map,
                             uint64_t total_bytes) {
  json wm = json::object();
  for (const auto& [name, file] : weight_map) wm[name] = file;
  const json index = {{"metadata", {{"total_size", total_bytes}}}, {"weight_map", wm}};
  std::string text;
  try {
    text = index.dump(2) + "\n";
  } catch (const json::exception& ex) {
    throw Error(path + ": tensor names must be valid UTF-8 (" + ex.what() + ")");
  }
  write_file_atomic(path, text);
}

}  // namespace moepp::io
