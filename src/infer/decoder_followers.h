// The leader/follower protocol of expert-parallel inference. Rank 0 of a decoder's expert group runs
// the program (tokenizer, engine, scorer, HTTP server) and every Decoder::forward it makes; the other
// ranks only follow: each forward on rank 0 first broadcasts a description of the call over the group
//   header  [kind (forward | stop), cache slots, cache max_len, router logits wanted, chunks, tokens]
//   body    per chunk [slot, the slot's cache length before the call, n, all_logits], then the tokens
// and the followers run the same forward on their own cache, first setting each chunk's slot to the
// length sent (so clears and truncations of rank 0's cache are mirrored without sending them) and
// discarding the logits. Decoder::copy_cache_slot sends a "copy" header (source slot, its length,
// destination slot) that the followers apply to their cache. A "stop" message ends the followers' loop.
//
// Contract: on rank 0 one KvCache at a time is used with a group's decoder (a cache of other
// dimensions replaces the followers' cache; its contents start over); positions below a slot's
// length were written by forward() or Decoder::copy_cache_slot (never by hand). Everything here runs on the thread that calls the
// decoder (Comm is not thread-safe).
#pragma once

#include <cstdint>
#include <vector>

#include "comm/comm.h"
#include "infer/decoder.h"
#include "infer/kv_cache.h"

namespace moepp {

// Rank 0: describes one forward call to the group (called by Decoder::forward after its checks).
void announce_forward(Comm& group, const KvCache& cache, const std::vector<DecodeChunk>& batch, bool router_logits);

// Rank 0: describes cache.copy_slot(dst, src) to the group (called by Decoder::copy_cache_slot).
void announce_copy(Comm& group, const KvCache& cache, int64_t dst, int64_t src);

// Rank 0: tells the followers to return from follow_decoder().
void announce_stop(Comm& group);

// Ranks other than 0 of dec's expert group: runs every announced forward until "stop"; returns the
// number of forward calls run (copies not counted). Throws moepp::Error when dec has no group or this is rank 0.
int64_t follow_decoder(const Decoder& dec);

// Rank 0's end of the protocol as a scope: stop() (or the destructor, also during unwinding) sends
// "stop" once. Does nothing for a decoder without a group or on another rank. The destructor never
// throws (a failure to send is printed; the job's error path ends the others).
class FollowerRelease {
 public:
  explicit FollowerRelease(const Decoder& dec)
      : group_(dec.expert_group() && dec.expert_group()->rank() == 0 ? dec.expert_group() : nullptr) {}
  ~FollowerRelease();
  FollowerRelease(const FollowerRelease&) = delete;
  FollowerRelease& operator=(const FollowerRelease&) = delete;
  void stop();

 private:
  Comm* group_;
};

}  // namespace moepp
