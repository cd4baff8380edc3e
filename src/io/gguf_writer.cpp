// GgufWriter (see gguf_writer.h): serialisation of the GGUF v3 layout.
#include "io/gguf_writer.h"

#include <algorithm>
#include <cstring>

#include "core/error.h"
#include "core/little_endian.h"
#include "io/file.h"

namespace moepp::io {
namespace {

constexpr uint32_t kGgufVersion = 3;
constexpr size_t kMaxTensorName = 63;  // ggml's GGML_MAX_NAME (64) less the terminating zero

void put_u32(std::string& s, uint32_t v) {
  uint8_t b[4];
  store_le32(b, v);
  s.append(reinterpret_cast<const char*>(b), 4);
}
void put_u64(std::string& s, uint64_t v) {
  uint8_t b[8];
  store_le64(b, v);
  s.append(reinterpret_cast<const char*>(b), 8);
}
void put_f32(std::string& s, float v) {
  uint32_t u;
  std::memcpy(&u, &v, 4);
  put_u32(s, u);
}
void put_string(std::string& s, const std::string& v) {
  put_u64(s, v.size());
  s += v;
}
uint64_t align_up(uint64_t v, uint64_t a) { return (v + a - 1) / a * a; }

}  // namespace

const char* ggml_type_name(GgmlType t) {
  switch (t) {
    case GgmlType::kF32: return "F32";
    case GgmlType::kF16: return "F16";
    case GgmlType::kBF16: return "BF16";
  }
  return "?";
}

size_t ggml_type_size(GgmlType t) { return t == GgmlType::kF32 ? 4 : 2; }

void GgufWriter::begin_kv(const std::string& key, GgufType type) {
  check(!key.empty() && key.size() <= 65535, "gguf: metadata key '" + key + "' is empty or too long");
  check(std::find(keys_.begin(), keys_.end(), key) == keys_.end(), "gguf: metadata key '" + key + "' added twice");
  keys_.push_back(key);
  put_string(kv_, key);
  put_u32(kv_, static_cast<uint32_t>(type));
  ++kv_count_;
}

void GgufWriter::add_u32(const std::string& key, uint32_t v) {
  begin_kv(key, GgufType::kU32);
  put_u32(kv_, v);
}
void GgufWriter::add_i32(const std::string& key, int32_t v) {
  begin_kv(key, GgufType::kI32);
  put_u32(kv_, static_cast<uint32_t>(v));
}
void GgufWriter::add_u64(const std::string& key, uint64_t v) {
  begin_kv(key, GgufType::kU64);
  put_u64(kv_, v);
}
void GgufWriter::add_f32(const std::string& key, float v) {
  begin_kv(key, GgufType::kF32);
  put_f32(kv_, v);
}
void GgufWriter::add_bool(const std::string& key, bool v) {
  begin_kv(key, GgufType::kBool);
  kv_.push_back(v ? 1 : 0);
}
void GgufWriter::add_string(const std::string& key, const std::string& v) {
  begin_kv(key, GgufType::kString);
  put_string(kv_, v);
}
void GgufWriter::add_string_array(const std::string& key, const std::vector<std::string>& v) {
  begin_kv(key, GgufType::kArray);
  put_u32(kv_, static_cast<uint32_t>(GgufType::kString));
  put_u64(kv_, v.size());
  for (const std::string& s : v) put_string(kv_, s);
}
void GgufWriter::add_f32_array(const std::string& key, const std::vector<float>& v) {
  begin_kv(key, GgufType::kArray);
  put_u32(kv_, static_cast<uint32_t>(GgufType::kF32));
  put_u64(kv_, v.size());
  for (float x : v) put_f32(kv_, x);
}
void GgufWriter::add_i32_array(const std::string& key, const std::vector<int32_t>& v) {
  begin_kv(key, GgufType::kArray);
  put_u32(kv_, static_cast<uint32_t>(GgufType::kI32));
  put_u64(kv_, v.size());
  for (int32_t x : v) put_u32(kv_, static_cast<uint32_t>(x));
}

void GgufWriter::set_alignment(uint32_t a) {
  check(tensors_.empty(), "gguf: set_alignment after a tensor was added");
  check(a >= 8 && a <= 4096 && (a & (a - 1)) == 0,
        "gguf: alignment " + std::to_string(a) + " is not a power of two in [8, 4096]");
  alignment_ = a;
  add_u32("general.alignment", a);
}

void GgufWriter::add_tensor(const std::string& name, const std::vector<int64_t>& shape, GgmlType type,
                            std::vector<uint8_t> bytes) {
  check(!name.empty() && name.size() <= kMaxTensorName,
        "gguf: tensor name '" + name + "' must have 1 to " + std::to_string(kMaxTensorName) + " bytes");
  for (const Tensor& t : tensors_) check(t.name != name, "gguf: tensor '" + name + "' added twice");
  check(!shape.empty() && shape.size() <= 4, "gguf: tensor '" + name + "' must have 1 to 4 dimensions");
  uint64_t numel = 1;
  for (int64_t d : shape) {
    check(d > 0, "gguf: tensor '" + name + "' has a dimension <= 0");
    numel *= static_cast<uint64_t>(d);
  }
  check(bytes.size() == numel * ggml_type_size(type),
        "gguf: tensor '" + name + "': " + std::to_string(bytes.size()) + " bytes given, " +
            std::to_string(numel * ggml_type_size(type)) + " expected for its shape and type " + ggml_type_name(type));
  const uint64_t offset = align_up(data_end_, alignment_);
  data_end_ = offset + bytes.size();
  tensors_.push_back({name, shape, type, std::move(bytes), offset});
}

uint64_t GgufWriter::data_bytes() const { return align_up(data_end_, alignment_); }

std::string GgufWriter::header_bytes() const {
  std::string h = "GGUF";
  put_u32(h, kGgufVersion);
  put_u64(h, tensors_.size());
  put_u64(h, kv_count_);
  h += kv_;
  for (const Tensor& t : tensors_) {
    put_string(h, t.name);
    put_u32(h, static_cast<uint32_t>(t.shape.size()));
    for (auto it = t.shape.rbegin(); it != t.shape.rend(); ++it) put_u64(h, static_cast<uint64_t>(*it));
    put_u32(h, static_cast<uint32_t>(t.type));
    put_u64(h, t.offset);
  }
  h.resize(align_up(h.size(), alignment_), '\0');
  return h;
}

void GgufWriter::write(const std::string& path) const {
  const std::string header = header_bytes();
  static const std::vector<uint8_t> zeros(4096, 0);  // padding: less than the alignment (<= 4096)
  std::vector<ByteRange> parts;
  parts.emplace_back(header.data(), header.size());
  uint64_t at = 0;
  for (const Tensor& t : tensors_) {
    if (t.offset > at) parts.emplace_back(zeros.data(), t.offset - at);
    parts.emplace_back(t.bytes.data(), t.bytes.size());
    at = t.offset + t.bytes.size();
  }
  if (data_bytes() > at) parts.emplace_back(zeros.data(), data_bytes() - at);
  write_file_atomic(path, parts);
}

}  // namespace moepp::io
