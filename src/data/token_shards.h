// Token shards: the binary files that hold a tokenised corpus (format in docs/data.md, "Token
// shards"), their writer (streaming, atomic: temp file + rename), a validating memory-mapped reader,
// and BatchSampler, which cuts deterministic (inputs, targets) batches out of a shard.
//
// Layout (little-endian), 64-byte header then the tokens:
//   0  char[8] magic "MOEPPTOK"      8  u32 version (1)          12 u32 token_bytes (2 or 4)
//   16 u32 vocab_size                20 u32 flags (bit 0: bos before each document, bit 1: eos after)
//   24 u64 n_tokens                  32 u64 n_docs               40 i32 bos_id   44 i32 eos_id
//   48 u8[16] reserved (zero)        64 tokens: n_tokens x (u16 when vocab_size <= 65536, else u32)
#pragma once

#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

namespace moepp::data {

inline constexpr char kShardMagic[8] = {'M', 'O', 'E', 'P', 'P', 'T', 'O', 'K'};
inline constexpr uint32_t kShardVersion = 1;
inline constexpr size_t kShardHeaderBytes = 64;
inline constexpr uint32_t kShardFlagBos = 1u << 0;  // bos_id precedes every document
inline constexpr uint32_t kShardFlagEos = 1u << 1;  // eos_id follows every document

// Bytes per token for a vocabulary: 2 when every id fits in uint16, else 4.
uint32_t shard_token_bytes(uint32_t vocab_size);

struct ShardInfo {
  uint32_t version = kShardVersion;
  uint32_t token_bytes = 2;
  uint32_t vocab_size = 0;
  uint32_t flags = 0;
  uint64_t n_tokens = 0;
  uint64_t n_docs = 0;
  int32_t bos_id = -1;
  int32_t eos_id = -1;
};

// Writes a shard: documents are appended one by one (each framed by bos/eos as `flags` says) and
// streamed to `path`.tmp.<pid>; finish() writes the header, fsyncs and renames onto `path`. A writer
// destroyed without finish() removes its temporary file and leaves `path` untouched.
class TokenShardWriter {
 public:
  // flags: kShardFlagBos / kShardFlagEos; a flag whose id is < 0 is an error.
  TokenShardWriter(const std::string& path, uint32_t vocab_size, int32_t bos_id, int32_t eos_id,
                   uint32_t flags = kShardFlagEos);
  ~TokenShardWriter();
  TokenShardWriter(const TokenShardWriter&) = delete;
  TokenShardWriter& operator=(const TokenShardWriter&) = delete;

  // Appends one document; throws moepp::Error on an id outside [0, vocab_size).
  void add_document(const std::vector<int32_t>& ids);
  // Appends raw tokens with no framing (not counted as a document).
  void add_tokens(const int32_t* ids, size_t n);
  const ShardInfo& info() const { return info_; }
  void finish();

 private:
  void put(int32_t id);
  void flush_buffer();
  void fail(const std::string& what);

  std::string path_, tmp_;
  std::FILE* f_ = nullptr;
  ShardInfo info_;
  std::vector<uint8_t> buf_;
  bool finished_ = false;
};

// Writes a whole shard at once (documents framed as in TokenShardWriter).
ShardInfo write_token_shard(const std::string& path, const std::vector<std::vector<int32_t>>& docs,
                            uint32_t vocab_size, int32_t bos_id, int32_t eos_id, uint32_t flags = kShardFlagEos);

// A read-only, memory-mapped shard. Opening validates everything: magic, version, token width
// (must match the vocabulary), reserved bytes, exact file size, and every token id < vocab_size. Any
// fault throws moepp::Error naming the file.
class TokenShard {
 public:
  explicit TokenShard(const std::string& path);
  ~TokenShard();
  TokenShard(TokenShard&& other) noexcept;
  TokenShard& operator=(TokenShard&& other) noexcept;
  TokenShard(const TokenShard&) = delete;
  TokenShard& operator=(const TokenShard&) = delete;

  const std::string& path() const { return path_; }
  const ShardInfo& info() const { return info_; }
  uint64_t size() const { return info_.n_tokens; }
  uint32_t vocab_size() const { return info_.vocab_size; }
  int32_t operator[](uint64_t i) const;                 // unchecked
  int32_t at(uint64_t i) const;                         // throws on i >= size()
  void copy(uint64_t begin, uint64_t n, int32_t* out) const;  // throws when out of range
  std::vector<int32_t> tokens(uint64_t begin, uint64_t n) const;

 private:
  void unmap();
  std::string path_;
  ShardInfo info_;
  const uint8_t* map_ = nullptr;
  size_t map_size_ = 0;
};

// Parses and validates a shard header (`bytes` holds at least kShardHeaderBytes; file_size is the
// size of the whole file). Does not look at the tokens. Throws moepp::Error naming `source`.
ShardInfo parse_shard_header(const uint8_t* bytes, size_t available, uint64_t file_size, const std::string& source);

// One batch: B rows of T tokens, row-major. targets[b][t] = inputs[b][t + 1] in the shard.
struct TokenBatch {
  int64_t batch = 0, seq_len = 0;
  std::vector<int32_t> inputs, targets;  // batch * seq_len each
  std::vector<uint64_t> offsets;         // start of each row's window in the shard
};

// Cuts windows of seq_len + 1 tokens out of a shard. Deterministic: batch k depends only on (shard
// size, batch, seq_len, seed, mode, k), so training that resumes at step k sees the same batches.
//   kRandom:     each row starts at a uniformly random offset in [0, size - seq_len - 1], drawn from
//                SplitMix64(seed, k, row) (same on every platform).
//   kSequential: window j starts at j * seq_len (windows tile the shard; the last partial one is
//                dropped); batch k holds windows k*batch ... k*batch + batch - 1, wrapping around.
//                Used for evaluation: num_windows() windows cover the shard once.
class BatchSampler {
 public:
  enum class Mode { kRandom, kSequential };
  BatchSampler(const TokenShard& shard, int64_t batch, int64_t seq_len, uint64_t seed, Mode mode = Mode::kRandom);

  TokenBatch batch_at(uint64_t k) const;
  TokenBatch next() { return batch_at(step_++); }
  uint64_t step() const { return step_; }
  void set_step(uint64_t k) { step_ = k; }
  uint64_t num_windows() const;  // sequential windows in the shard

 private:
  uint64_t offset(uint64_t k, int64_t row) const;
  const TokenShard* shard_;
  int64_t batch_, seq_len_;
  uint64_t seed_;
  Mode mode_;
  uint64_t step_ = 0;
};

// Documents of a text file in the corpus text format (docs/data.md): one or more blank lines
// (empty or whitespace-only) end a document; a document's lines are joined with "\n"; "\r\n" is
// read as "\n". Throws moepp::Error naming the file when it cannot be read.
std::vector<std::string> read_text_documents(const std::string& path);

}  // namespace moepp::data
