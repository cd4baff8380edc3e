// Token shards: writer (streamed to a temp file, header written last, then fsync + rename), the
// validating mmap reader, the deterministic batch sampler, and the corpus text-format reader.
#include "data/token_shards.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>

#include "core/error.h"
#include "core/little_endian.h"
#include "io/mapped_file.h"

namespace fs = std::filesystem;

namespace moepp::data {

namespace {

std::string errno_text(int e) { return std::strerror(e); }

void encode_header(const ShardInfo& s, uint8_t* h) {
  std::memset(h, 0, kShardHeaderBytes);
  std::memcpy(h, kShardMagic, 8);
  store_le32(h + 8, s.version);
  store_le32(h + 12, s.token_bytes);
  store_le32(h + 16, s.vocab_size);
  store_le32(h + 20, s.flags);
  store_le64(h + 24, s.n_tokens);
  store_le64(h + 32, s.n_docs);
  store_le32(h + 40, static_cast<uint32_t>(s.bos_id));
  store_le32(h + 44, static_cast<uint32_t>(s.eos_id));
}

uint64_t splitmix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

}  // namespace

uint32_t shard_token_bytes(uint32_t vocab_size) { return vocab_size <= 65536u ? 2u : 4u; }

// ---------------------------------------------------------------------------------------------------
// Writer

TokenShardWriter::TokenShardWriter(const std::string& path, uint32_t vocab_size, int32_t bos_id, int32_t eos_id,
                                   uint32_t flags)
    : path_(path), tmp_(path + ".tmp." + std::to_string(::getpid())) {
  check(vocab_size > 0, path + ": token shard vocab_size must be > 0");
  check((flags & ~(kShardFlagBos | kShardFlagEos)) == 0, path + ": unknown token shard flags");
  if (flags & kShardFlagBos)
    check(bos_id >= 0 && static_cast<uint32_t>(bos_id) < vocab_size,
          path + ": bos_id " + std::to_string(bos_id) + " is not in the vocabulary (needed by the bos flag)");
  if (flags & kShardFlagEos)
    check(eos_id >= 0 && static_cast<uint32_t>(eos_id) < vocab_size,
          path + ": eos_id " + std::to_string(eos_id) + " is not in the vocabulary (needed by the eos flag)");
  info_.vocab_size = vocab_size;
  info_.token_bytes = shard_token_bytes(vocab_size);
  info_.flags = flags;
  info_.bos_id = bos_id;
  info_.eos_id = eos_id;
  const fs::path p(path);
  std::error_code ec;
  if (p.has_parent_path()) {
    fs::create_directories(p.parent_path(), ec);
    if (ec) throw Error("cannot write " + path + ": cannot create its directory: " + ec.message());
  }
  f_ = std::fopen(tmp_.c_str(), "wb");
  if (!f_) throw Error("cannot write " + path + ": cannot create " + tmp_ + ": " + errno_text(errno));
  uint8_t header[kShardHeaderBytes];
  encode_header(info_, header);  // placeholder, rewritten by finish()
  if (std::fwrite(header, 1, sizeof header, f_) != sizeof header) fail("write failed");
  buf_.reserve(1 << 20);
}

TokenShardWriter::~TokenShardWriter() {
  if (f_) std::fclose(f_);
  if (!finished_) {
    std::error_code ec;
    fs::remove(tmp_, ec);
  }
}

void TokenShardWriter::fail(const std::string& what) {
  const int e = errno;
  if (f_) std::fclose(f_);
  f_ = nullptr;
  std::error_code ec;
  fs::remove(tmp_, ec);
  throw Error("cannot write " + path_ + ": " + what + (e ? ": " + errno_text(e) : std::string()));
}

void TokenShardWriter::put(int32_t id) {
  if (id < 0 || static_cast<uint32_t>(id) >= info_.vocab_size)
    throw Error(path_ + ": token id " + std::to_string(id) + " is outside the vocabulary [0, " +
                std::to_string(info_.vocab_size) + ")");
  const uint32_t v = static_cast<uint32_t>(id);
  uint8_t le[4];
  store_le32(le, v);
  buf_.insert(buf_.end(), le, le + info_.token_bytes);
  ++info_.n_tokens;
  if (buf_.size() >= (1u << 20)) flush_buffer();
}

void TokenShardWriter::flush_buffer() {
  if (buf_.empty()) return;
  if (std::fwrite(buf_.data(), 1, buf_.size(), f_) != buf_.size()) fail("write failed");
  buf_.clear();
}

void TokenShardWriter::add_document(const std::vector<int32_t>& ids) {
  check(f_ && !finished_, path_ + ": token shard writer is closed");
  if (info_.flags & kShardFlagBos) put(info_.bos_id);
  for (int32_t id : ids) put(id);
  if (info_.flags & kShardFlagEos) put(info_.eos_id);
  ++info_.n_docs;
}

void TokenShardWriter::add_tokens(const int32_t* ids, size_t n) {
  check(f_ && !finished_, path_ + ": token shard writer is closed");
  for (size_t i = 0; i < n; ++i) put(ids[i]);
}

void TokenShardWriter::finish() {
  check(f_ && !finished_, path_ + ": token shard writer is closed");
  flush_buffer();
  uint8_t header[kShardHeaderBytes];
  encode_header(info_, header);
  errno = 0;
  if (std::fseek(f_, 0, SEEK_SET) != 0) fail("seek failed");
  if (std::fwrite(header, 1, sizeof header, f_) != sizeof header) fail("write failed");
  if (std::fflush(f_) != 0) fail("flush failed");
  if (::fsync(::fileno(f_)) != 0) fail("fsync failed");
  const int rc = std::fclose(f_);
  f_ = nullptr;
  if (rc != 0) fail("close failed");
  if (std::rename(tmp_.c_str(), path_.c_str()) != 0) fail("rename failed");
  finished_ = true;
}

ShardInfo write_token_shard(const std::string& path, const std::vector<std::vector<int32_t>>& docs,
                            uint32_t vocab_size, int32_t bos_id, int32_t eos_id, uint32_t flags) {
  TokenShardWriter w(path, vocab_size, bos_id, eos_id, flags);
  for (const auto& d : docs) w.add_document(d);
  w.finish();
  return w.info();
}

// ---------------------------------------------------------------------------------------------------
// Reader

ShardInfo parse_shard_header(const uint8_t* b, size_t available, uint64_t file_size, const std::string& source) {
  const std::string where = source + ": ";
  if (file_size < kShardHeaderBytes || available < kShardHeaderBytes)
    throw Error(where + "truncated token shard: " + std::to_string(file_size) + " bytes, the header alone is " +
                std::to_string(kShardHeaderBytes));
  if (std::memcmp(b, kShardMagic, 8) != 0) throw Error(where + "not a token shard (bad magic, expected \"MOEPPTOK\")");
  ShardInfo s;
  s.version = load_le32(b + 8);
  s.token_bytes = load_le32(b + 12);
  s.vocab_size = load_le32(b + 16);
  s.flags = load_le32(b + 20);
  s.n_tokens = load_le64(b + 24);
  s.n_docs = load_le64(b + 32);
  s.bos_id = static_cast<int32_t>(load_le32(b + 40));
  s.eos_id = static_cast<int32_t>(load_le32(b + 44));
  if (s.version != kShardVersion)
    throw Error(where + "unsupported token shard version " + std::to_string(s.version) + " (this build reads " +
                std::to_string(kShardVersion) + ")");
  if (s.vocab_size == 0) throw Error(where + "token shard vocab_size is 0");
  if (s.token_bytes != shard_token_bytes(s.vocab_size))
    throw Error(where + "token_bytes " + std::to_string(s.token_bytes) + " does not match vocab_size " +
                std::to_string(s.vocab_size) + " (expected " + std::to_string(shard_token_bytes(s.vocab_size)) + ")");
  if (s.flags & ~(kShardFlagBos | kShardFlagEos))
    throw Error(where + "unknown token shard flags " + std::to_string(s.flags));
  if ((s.flags & kShardFlagBos) && (s.bos_id < 0 || static_cast<uint32_t>(s.bos_id) >= s.vocab_size))
    throw Error(where + "bos_id " + std::to_string(s.bos_id) + " is outside the vocabulary");
  if ((s.flags & kShardFlagEos) && (s.eos_id < 0 || static_cast<uint32_t>(s.eos_id) >= s.vocab_size))
    throw Error(where + "eos_id " + std::to_string(s.eos_id) + " is outside the vocabulary");
  for (size_t i = 48; i < kShardHeaderBytes; ++i)
    if (b[i] != 0) throw Error(where + "reserved header bytes are not zero");
  const uint64_t payload = file_size - kShardHeaderBytes;
  if (s.n_tokens > payload / s.token_bytes || s.n_tokens * s.token_bytes != payload) {
    if (s.n_tokens > payload / s.token_bytes)
      throw Error(where + "truncated token shard: header says " + std::to_string(s.n_tokens) + " tokens (" +
                  std::to_string(s.n_tokens) + " x " + std::to_string(s.token_bytes) + " bytes), the file holds " +
                  std::to_string(payload) + " bytes after the header");
    throw Error(where + "token shard has " + std::to_string(payload - s.n_tokens * s.token_bytes) +
                " trailing bytes after its " + std::to_string(s.n_tokens) + " tokens");
  }
  if (s.n_docs > s.n_tokens && (s.flags & (kShardFlagBos | kShardFlagEos)))
    throw Error(where + "n_docs " + std::to_string(s.n_docs) + " exceeds n_tokens");
  return s;
}

TokenShard::TokenShard(const std::string& path) : path_(path) {
  {
    const io::FileMapping m = io::map_file_readonly(path, "token shard");
    map_ = m.data;
    map_size_ = m.size;
  }
  try {
    info_ = parse_shard_header(map_, map_size_, map_size_, path_);
    // Every id must be inside the vocabulary: one pass, cheap next to any use of the tokens.
    const uint8_t* p = map_ + kShardHeaderBytes;
    const uint32_t V = info_.vocab_size;
    for (uint64_t i = 0; i < info_.n_tokens; ++i) {
      const uint32_t v = info_.token_bytes == 2 ? static_cast<uint32_t>(p[2 * i] | (p[2 * i + 1] << 8))
                                                : load_le32(p + 4 * i);
      if (v >= V)
        throw Error(path_ + ": token " + std::to_string(i) + " has id " + std::to_string(v) +
                    ", outside the vocabulary [0, " + std::to_string(V) + ")");
    }
  } catch (...) {
    unmap();
    throw;
  }
}

void TokenShard::unmap() {
  if (map_) ::munmap(const_cast<uint8_t*>(map_), map_size_);
  map_ = nullptr;
  map_size_ = 0;
}

TokenShard::~TokenShard() { unmap(); }

TokenShard::TokenShard(TokenShard&& o) noexcept
    : path_(std::move(o.path_)), info_(o.info_), map_(o.map_), map_size_(o.map_size_) {
  o.map_ = nullptr;
  o.map_size_ = 0;
  o.info_ = ShardInfo{};
}

TokenShard& TokenShard::operator=(TokenShard&& o) noexcept {
  if (this != &o) {
    unmap();
    path_ = std::move(o.path_);
    info_ = o.info_;
    map_ = o.map_;
    map_size_ = o.map_size_;
    o.map_ = nullptr;
    o.map_size_ = 0;
    o.info_ = ShardInfo{};
  }
  return *this;
}

int32_t TokenShard::operator[](uint64_t i) const {
  const uint8_t* p = map_ + kShardHeaderBytes;
  if (info_.token_bytes == 2) return static_cast<int32_t>(p[2 * i] | (p[2 * i + 1] << 8));
  return static_cast<int32_t>(load_le32(p + 4 * i));
}

int32_t TokenShard::at(uint64_t i) const {
  if (i >= info_.n_tokens)
    throw Error(path_ + ": token index " + std::to_string(i) + " out of range (" + std::to_string(info_.n_tokens) +
                " tokens)");
  return (*this)[i];
}

void TokenShard::copy(uint64_t begin, uint64_t n, int32_t* out) const {
  if (begin > info_.n_tokens || n > info_.n_tokens - begin)
    throw Error(path_ + ": token range [" + std::to_string(begin) + ", " + std::to_string(begin + n) +
                ") out of range (" + std::to_string(info_.n_tokens) + " tokens)");
  const uint8_t* p = map_ + kShardHeaderBytes;
  if (info_.token_bytes == 2) {
    const uint8_t* q = p + 2 * begin;
    for (uint64_t i = 0; i < n; ++i) out[i] = static_cast<int32_t>(q[2 * i] | (q[2 * i + 1] << 8));
  } else {
    const uint8_t* q = p + 4 * begin;
    for (uint64_t i = 0; i < n; ++i) out[i] = static_cast<int32_t>(load_le32(q + 4 * i));
  }
}

std::vector<int32_t> TokenShard::tokens(uint64_t begin, uint64_t n) const {
  std::vector<int32_t> v(n);
  copy(begin, n, v.data());
  return v;
}

// ---------------------------------------------------------------------------------------------------
// Batch sampler

BatchSampler::BatchSampler(const TokenShard& shard, int64_t batch, int64_t seq_len, uint64_t seed, Mode mode)
    : shard_(&shard), batch_(batch), seq_len_(seq_len), seed_(seed), mode_(mode) {
  check(batch >= 1, shard.path() + ": batch size must be >= 1 (got " + std::to_string(batch) + ")");
  check(seq_len >= 1, shard.path() + ": sequence length must be >= 1 (got " + std::to_string(seq_len) + ")");
  check(shard.size() >= static_cast<uint64_t>(seq_len) + 1,
        shard.path() + ": " + std::to_string(shard.size()) + " tokens is too few for windows of seq_len + 1 = " +
            std::to_string(seq_len + 1));
}

uint64_t BatchSampler::num_windows() const {
  // Window j covers tokens [j*T, j*T + T] (T + 1 tokens, overlapping the next by one).
  return (shard_->size() - 1) / static_cast<uint64_t>(seq_len_);
}

uint64_t BatchSampler::offset(uint64_t k, int64_t row) const {
  const uint64_t T = static_cast<uint64_t>(seq_len_);
  if (mode_ == Mode::kSequential) {
    const uint64_t j = (k * static_cast<uint64_t>(batch_) + static_cast<uint64_t>(row)) % num_windows();
    return j * T;
  }
  const uint64_t range = shard_->size() - T;  // offsets 0 .. size - T - 1
  const uint64_t r = splitmix64(splitmix64(splitmix64(seed_) ^ k) ^ static_cast<uint64_t>(row));
  return static_cast<uint64_t>((static_cast<unsigned __int128>(r) * range) >> 64);
}

TokenBatch BatchSampler::batch_at(uint64_t k) const {
  TokenBatch b;
  b.batch = batch_;
  b.seq_len = seq_len_;
  const size_t T = static_cast<size_t>(seq_len_);
  b.inputs.resize(static_cast<size_t>(batch_) * T);
  b.targets.resize(static_cast<size_t>(batch_) * T);
  b.offsets.resize(static_cast<size_t>(batch_));
  std::vector<int32_t> window(T + 1);
  for (int64_t r = 0; r < batch_; ++r) {
    const uint64_t off = offset(k, r);
    b.offsets[static_cast<size_t>(r)] = off;
    shard_->copy(off, T + 1, window.data());
    std::copy(window.begin(), window.end() - 1, b.inputs.begin() + static_cast<std::ptrdiff_t>(r * T));
    std::copy(window.begin() + 1, window.end(), b.targets.begin() + static_cast<std::ptrdiff_t>(r * T));
  }
  return b;
}

// ---------------------------------------------------------------------------------------------------
// Corpus text format

std::vector<std::string> read_text_documents(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error("cannot open " + path + ": " + errno_text(errno));
  std::vector<std::string> docs;
  std::string doc, line;
  bool open = false;
  while (std::getline(in, line)) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.find_first_not_of(" \t\f\v") == std::string::npos) {
      if (open) docs.push_back(std::move(doc));
      doc.clear();
      open = false;
      continue;
    }
    if (open) doc += '\n';
    doc += line;
    open = true;
  }
  if (in.bad()) throw Error(path + ": read error");
  if (open) docs.push_back(std::move(doc));
  return docs;
}

}  // namespace moepp::data
