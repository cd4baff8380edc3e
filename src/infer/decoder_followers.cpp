// The leader/follower protocol of expert-parallel inference (see decoder_followers.h).
#include "infer/decoder_followers.h"

#include <cstdio>
#include <cstring>
#include <exception>
#include <string>

#include "core/error.h"

namespace moepp {
namespace {

enum Kind : int64_t { kStop = 0, kForward = 1, kCopy = 2 };
// A forward's header; a copy's reuses the last three fields as source slot, its length, destination.
enum Header : int { kKind, kSlots, kMaxLen, kRouter, kChunks, kTokens, kHeaderSize };
enum CopyHeader : int { kCopySrc = kRouter, kCopySrcLen = kChunks, kCopyDst = kTokens };
constexpr int64_t kChunkFields = 4;  // slot, length before, n, all_logits

}  // namespace

void announce_forward(Comm& group, const KvCache& cache, const std::vector<DecodeChunk>& batch, bool router_logits) {
  int64_t n_tokens = 0;
  for (const DecodeChunk& c : batch) n_tokens += c.n;
  int64_t h[kHeaderSize] = {kForward, cache.n_slots(), cache.max_len(), router_logits ? 1 : 0,
                            static_cast<int64_t>(batch.size()), n_tokens};
  group.broadcast_waiting(h, sizeof h, 0);
  std::vector<int64_t> meta;
  meta.reserve(batch.size() * kChunkFields);
  std::vector<int32_t> tokens;
  tokens.reserve(n_tokens);
  for (const DecodeChunk& c : batch) {
    meta.insert(meta.end(), {c.slot, cache.length(c.slot), c.n, c.all_logits ? 1 : 0});
    tokens.insert(tokens.end(), c.tokens, c.tokens + c.n);
  }
  group.broadcast(meta.data(), static_cast<int64_t>(sizeof(int64_t) * meta.size()), 0);
  group.broadcast(tokens.data(), static_cast<int64_t>(sizeof(int32_t) * tokens.size()), 0);
}

void announce_copy(Comm& group, const KvCache& cache, int64_t dst, int64_t src) {
  int64_t h[kHeaderSize] = {kCopy, cache.n_slots(), cache.max_len(), src, cache.length(src), dst};
  group.broadcast_waiting(h, sizeof h, 0);
}

void announce_stop(Comm& group) {
  int64_t h[kHeaderSize] = {kStop, 0, 0, 0, 0, 0};
  group.broadcast_waiting(h, sizeof h, 0);
}

int64_t follow_decoder(const Decoder& dec) {
  Comm* group = dec.expert_group();
  check(group != nullptr && group->rank() != 0, "follow_decoder: only ranks other than 0 of an expert group follow");
  KvCache cache;
  DecoderScratch scratch;
  Tensor logits;
  std::vector<Tensor> router_logits;
  std::vector<int64_t> meta;
  std::vector<int32_t> tokens;
  std::vector<DecodeChunk> batch;
  int64_t calls = 0;
  for (;;) {
    int64_t h[kHeaderSize] = {};
    group->broadcast_waiting(h, sizeof h, 0);  // idle between requests: without spinning a core
    if (h[kKind] == kStop) return calls;
    if (h[kKind] == kCopy) {
      check(cache.n_slots() == h[kSlots] && cache.max_len() == h[kMaxLen],
            "follow_decoder: rank 0 copies a slot of a cache it has not run");
      cache.set_length(h[kCopySrc], h[kCopySrcLen]);
      cache.copy_slot(h[kCopyDst], h[kCopySrc]);
      continue;
    }
    check(h[kKind] == kForward && h[kChunks] > 0 && h[kTokens] > 0,
          "follow_decoder: malformed message from rank 0 (kind " + std::to_string(h[kKind]) + ")");
    meta.resize(h[kChunks] * kChunkFields);
    tokens.resize(h[kTokens]);
    group->broadcast(meta.data(), static_cast<int64_t>(sizeof(int64_t) * meta.size()), 0);
    group->broadcast(tokens.data(), static_cast<int64_t>(sizeof(int32_t) * tokens.size()), 0);
    if (cache.n_slots() != h[kSlots] || cache.max_len() != h[kMaxLen]) cache = dec.make_cache(h[kSlots], h[kMaxLen]);
    batch.resize(h[kChunks]);
    int64_t t = 0;
    for (int64_t i = 0; i < h[kChunks]; ++i) {
      const int64_t* m = meta.data() + i * kChunkFields;
      cache.set_length(m[0], m[1]);
      batch[i] = DecodeChunk{m[0], tokens.data() + t, m[2], m[3] != 0};
      t += m[2];
    }
    check(t == h[kTokens], "follow_decoder: malformed message from rank 0 (token count)");
    dec.forward(logits, cache, batch, scratch, h[kRouter] ? &router_logits : nullptr);
    ++calls;
  }
}

FollowerRelease::~FollowerRelease() {
  try {
    stop();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "moepp: error: could not release the expert group's followers: %s\n", e.what());
  }
}

void FollowerRelease::stop() {
  if (group_ == nullptr) return;
  Comm* g = group_;
  group_ = nullptr;
  announce_stop(*g);
}

}  // namespace moepp
