// Tests for data/token_shards: writer/reader round trips (uint16 and uint32 ids, bos/eos framing),
// the exact byte layout of the header, one test per malformed shard (bad magic, version, width,
// truncation, trailing bytes, id >= vocab...; each a moepp::Error naming the file), the batch
// sampler's determinism and window contents, and the corpus text reader. `moepp data` on the CLI is
// test_data_command.cpp.
#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <set>
#include <string>
#include <vector>

#include "core/error.h"
#include "data/token_shards.h"
#include "test_util.h"

namespace fs = std::filesystem;
using moepp::Error;
using namespace moepp::data;
using namespace moepp::test;

namespace {

class TokenShards : public ScratchDirTest {
 protected:
  TokenShards() : ScratchDirTest("moepp_shard") {}

  // Expects opening `file` to throw a moepp::Error naming the file and containing `needle`.
  void expect_open_error(const std::string& file, const std::string& needle) {
    try {
      TokenShard s(file);
      FAIL() << "no error for " << needle;
    } catch (const Error& e) {
      const std::string m = e.what();
      EXPECT_NE(m.find(file), std::string::npos) << m;
      EXPECT_NE(m.find(needle), std::string::npos) << m;
    }
  }
};

std::vector<std::vector<int32_t>> some_docs() { return {{10, 11, 12}, {}, {13, 4000, 14, 15}}; }

TEST_F(TokenShards, RoundTripUint16WithBosEos) {
  const std::string p = path("a.bin");
  const ShardInfo w = write_token_shard(p, some_docs(), 4096, 1, 2, kShardFlagBos | kShardFlagEos);
  EXPECT_EQ(w.n_tokens, 13u);
  EXPECT_EQ(w.n_docs, 3u);
  const TokenShard s(p);
  EXPECT_EQ(s.info().token_bytes, 2u);
  EXPECT_EQ(s.vocab_size(), 4096u);
  EXPECT_EQ(s.info().n_docs, 3u);
  EXPECT_EQ(s.tokens(0, s.size()), (std::vector<int32_t>{1, 10, 11, 12, 2, 1, 2, 1, 13, 4000, 14, 15, 2}));
  EXPECT_EQ(fs::file_size(p), kShardHeaderBytes + 13 * 2);
  // No temp file left behind.
  for (const auto& e : fs::directory_iterator(dir())) EXPECT_EQ(e.path().filename().string(), "a.bin");
}

TEST_F(TokenShards, RoundTripUint32EosOnly) {
  const std::string p = path("b.bin");
  write_token_shard(p, {{70000, 5}, {65536}}, 100000, 1, 2, kShardFlagEos);
  const TokenShard s(p);
  EXPECT_EQ(s.info().token_bytes, 4u);
  EXPECT_EQ(s.tokens(0, s.size()), (std::vector<int32_t>{70000, 5, 2, 65536, 2}));
  EXPECT_EQ(s.at(0), 70000);
  EXPECT_THROW(s.at(5), Error);
  EXPECT_THROW(s.tokens(4, 2), Error);
}

TEST_F(TokenShards, Uint16Boundary) {
  EXPECT_EQ(shard_token_bytes(65536), 2u);
  EXPECT_EQ(shard_token_bytes(65537), 4u);
  const std::string p = path("c.bin");
  write_token_shard(p, {{65535, 0}}, 65536, -1, -1, 0);
  const TokenShard s(p);
  EXPECT_EQ(s.tokens(0, 2), (std::vector<int32_t>{65535, 0}));
}

TEST_F(TokenShards, HeaderLayout) {
  const std::string p = path("h.bin");
  write_token_shard(p, {{7, 8}}, 300, 1, 2, kShardFlagEos);
  const std::string b = read_bytes(p);
  ASSERT_EQ(b.size(), 64u + 3 * 2);
  auto u32 = [&](size_t o) {
    uint32_t v;
    std::memcpy(&v, b.data() + o, 4);
    return v;
  };
  auto u64 = [&](size_t o) {
    uint64_t v;
    std::memcpy(&v, b.data() + o, 8);
    return v;
  };
  EXPECT_EQ(b.substr(0, 8), "MOEPPTOK");
  EXPECT_EQ(u32(8), 1u);    // version
  EXPECT_EQ(u32(12), 2u);   // token bytes
  EXPECT_EQ(u32(16), 300u); // vocab
  EXPECT_EQ(u32(20), 2u);   // flags: eos
  EXPECT_EQ(u64(24), 3u);   // tokens
  EXPECT_EQ(u64(32), 1u);   // docs
  EXPECT_EQ(u32(40), 1u);   // bos
  EXPECT_EQ(u32(44), 2u);   // eos
  for (size_t i = 48; i < 64; ++i) EXPECT_EQ(b[i], 0);
  EXPECT_EQ(static_cast<uint8_t>(b[64]), 7);
  EXPECT_EQ(static_cast<uint8_t>(b[66]), 8);
  EXPECT_EQ(static_cast<uint8_t>(b[68]), 2);
}

TEST_F(TokenShards, WriterRejectsBadIdsAndLeavesNoFile) {
  const std::string p = path("bad.bin");
  {
    TokenShardWriter w(p, 100, 1, 2);
    w.add_document({5, 6});
    EXPECT_THROW(w.add_document({100}), Error);
    EXPECT_THROW(w.add_document({-3}), Error);
  }  // destroyed without finish(): nothing written
  EXPECT_FALSE(fs::exists(p));
  EXPECT_TRUE(fs::is_empty(dir()));
  EXPECT_THROW(TokenShardWriter(p, 100, 1, 200, kShardFlagEos), Error);  // eos outside vocab
  EXPECT_THROW(TokenShardWriter(p, 100, -1, 2, kShardFlagBos), Error);
  EXPECT_THROW(TokenShardWriter(p, 0, 1, 2), Error);
}

TEST_F(TokenShards, WriterReplacesAtomically) {
  const std::string p = path("r.bin");
  write_token_shard(p, {{5}}, 100, 1, 2);
  {
    TokenShardWriter w(p, 100, 1, 2);
    w.add_document({6, 7, 8});
    // Before finish(), the old shard is intact.
    EXPECT_EQ(TokenShard(p).size(), 2u);
    w.finish();
  }
  EXPECT_EQ(TokenShard(p).tokens(0, 4), (std::vector<int32_t>{6, 7, 8, 2}));
}

TEST_F(TokenShards, MalformedShards) {
  const std::string good = path("good.bin");
  write_token_shard(good, {{10, 20, 30}, {40}}, 1000, 1, 2);
  const std::string g = read_bytes(good);
  auto variant = [&](const std::string& name, std::string bytes) {
    const std::string p = path(name);
    write_bytes(p, bytes);
    return p;
  };
  auto patch32 = [&](std::string b, size_t off, uint32_t v) {
    std::memcpy(b.data() + off, &v, 4);
    return b;
  };

  std::string b = g;
  b[0] = 'X';
  expect_open_error(variant("magic.bin", b), "bad magic");
  expect_open_error(variant("short.bin", g.substr(0, 40)), "truncated");
  expect_open_error(variant("empty.bin", ""), "truncated");
  expect_open_error(variant("cut.bin", g.substr(0, g.size() - 1)), "truncated");
  expect_open_error(variant("trail.bin", g + "xy"), "trailing");
  expect_open_error(variant("version.bin", patch32(g, 8, 2)), "version");
  expect_open_error(variant("width.bin", patch32(g, 12, 4)), "token_bytes");
  expect_open_error(variant("vocab0.bin", patch32(g, 16, 0)), "vocab_size");
  expect_open_error(variant("flags.bin", patch32(g, 20, 8)), "flags");
  expect_open_error(variant("eos.bin", patch32(g, 44, 5000)), "eos_id");
  b = g;
  b[50] = 1;
  expect_open_error(variant("reserved.bin", b), "reserved");
  // A token id >= vocab: the third token (offset 64 + 2*2) becomes 1000.
  b = g;
  b[68] = static_cast<char>(1000 & 0xFF);
  b[69] = static_cast<char>(1000 >> 8);
  expect_open_error(variant("id.bin", b), "token 2 has id 1000");
  // A huge token count must not overflow into a pass.
  b = g;
  const uint64_t huge = ~uint64_t{0} / 2 + 7;
  std::memcpy(b.data() + 24, &huge, 8);
  expect_open_error(variant("count.bin", b), "truncated");
  expect_open_error(path("does_not_exist.bin"), "cannot open");
  EXPECT_THROW(TokenShard s(dir().string()), Error);  // a directory
}

TEST_F(TokenShards, MoveKeepsMapping) {
  const std::string p = path("m.bin");
  write_token_shard(p, {{3, 4, 5}}, 10, 1, 2);
  TokenShard a(p);
  TokenShard b = std::move(a);
  EXPECT_EQ(b.tokens(0, 4), (std::vector<int32_t>{3, 4, 5, 2}));
  EXPECT_EQ(a.size(), 0u);
}

// A shard whose token i is i % 1000 (no framing), to check window contents.
std::string ramp_shard(const std::string& p, int n) {
  TokenShardWriter w(p, 1000, -1, -1, 0);
  std::vector<int32_t> t(static_cast<size_t>(n));
  for (int i = 0; i < n; ++i) t[static_cast<size_t>(i)] = i % 1000;
  w.add_tokens(t.data(), t.size());
  w.finish();
  return p;
}

TEST_F(TokenShards, RandomSamplerIsDeterministicAndCorrect) {
  const TokenShard s(ramp_shard(path("ramp.bin"), 5000));
  BatchSampler a(s, 4, 16, 42), b(s, 4, 16, 42), c(s, 4, 16, 43);
  std::set<uint64_t> offsets;
  for (int k = 0; k < 20; ++k) {
    const TokenBatch x = a.next(), y = b.next(), z = c.next();
    EXPECT_EQ(x.inputs, y.inputs);
    EXPECT_EQ(x.targets, y.targets);
    EXPECT_EQ(x.offsets, y.offsets);
    if (k == 0) {
      EXPECT_NE(x.offsets, z.offsets);  // another seed, other windows
    }
    ASSERT_EQ(x.inputs.size(), 64u);
    for (int r = 0; r < 4; ++r) {
      const uint64_t off = x.offsets[static_cast<size_t>(r)];
      EXPECT_LE(off + 17, s.size());
      offsets.insert(off);
      for (int t = 0; t < 16; ++t) {
        EXPECT_EQ(x.inputs[static_cast<size_t>(r * 16 + t)], static_cast<int32_t>((off + t) % 1000));
        EXPECT_EQ(x.targets[static_cast<size_t>(r * 16 + t)], static_cast<int32_t>((off + t + 1) % 1000));
      }
    }
  }
  EXPECT_GT(offsets.size(), 70u);  // 80 draws, spread out
  // Resuming: batch_at(k) is the k-th batch.
  BatchSampler d(s, 4, 16, 42);
  const TokenBatch first = d.batch_at(0);
  d.set_step(7);
  BatchSampler e(s, 4, 16, 42);
  for (int k = 0; k < 7; ++k) e.next();
  EXPECT_EQ(d.next().inputs, e.next().inputs);
  EXPECT_EQ(first.inputs, BatchSampler(s, 4, 16, 42).next().inputs);
}

TEST_F(TokenShards, RandomSamplerCoversBothEnds) {
  // Offsets range over [0, size - T - 1]: with a tiny shard both ends appear.
  const TokenShard s(ramp_shard(path("tiny.bin"), 10));
  BatchSampler a(s, 8, 8, 1);
  std::set<uint64_t> seen;
  for (int k = 0; k < 50; ++k)
    for (uint64_t o : a.next().offsets) seen.insert(o);
  EXPECT_EQ(seen, (std::set<uint64_t>{0, 1}));
}

TEST_F(TokenShards, SequentialSamplerTilesTheShard) {
  const TokenShard s(ramp_shard(path("seq.bin"), 101));
  BatchSampler a(s, 3, 10, 0, BatchSampler::Mode::kSequential);
  EXPECT_EQ(a.num_windows(), 10u);
  const TokenBatch b0 = a.next(), b1 = a.next();
  EXPECT_EQ(b0.offsets, (std::vector<uint64_t>{0, 10, 20}));
  EXPECT_EQ(b1.offsets, (std::vector<uint64_t>{30, 40, 50}));
  EXPECT_EQ(b0.inputs[10], 10);
  EXPECT_EQ(b0.targets[29], 30);
  const TokenBatch b3 = a.batch_at(3);  // windows 9, 0, 1 (wraps)
  EXPECT_EQ(b3.offsets, (std::vector<uint64_t>{90, 0, 10}));
  EXPECT_EQ(b3.targets[9], 100);
}

TEST_F(TokenShards, SamplerRejectsBadShapes) {
  const TokenShard s(ramp_shard(path("small.bin"), 10));
  EXPECT_THROW(BatchSampler(s, 1, 10, 0), Error);  // needs 11 tokens
  EXPECT_THROW(BatchSampler(s, 0, 4, 0), Error);
  EXPECT_THROW(BatchSampler(s, 1, 0, 0), Error);
  EXPECT_NO_THROW(BatchSampler(s, 1, 9, 0));
}

TEST_F(TokenShards, ReadTextDocuments) {
  const std::string p = path("docs.txt");
  write_bytes(p, "\n\nfirst doc\nline two\r\n\nsecond\n \t \n\n\nthird\nend");
  EXPECT_EQ(read_text_documents(p), (std::vector<std::string>{"first doc\nline two", "second", "third\nend"}));
  write_bytes(p, "");
  EXPECT_TRUE(read_text_documents(p).empty());
  EXPECT_THROW(read_text_documents(path("none.txt")), Error);
}

}  // namespace
