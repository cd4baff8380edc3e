// Multi-head causal self-attention with grouped KV heads, tiled flash-attention style: the T x T score
// matrix of a head is never materialised. Forward: for each (sequence, head, query block) an online
// softmax over key blocks; it keeps the per-row logsumexp. Backward: the score tiles are recomputed
// from q, k and that logsumexp.
#pragma once

#include <cstdint>

namespace moepp {

struct AttnShape {
  int64_t B = 0, T = 0;  // sequences, tokens per sequence (rows b*T + t)
  int64_t H = 0;         // query heads
  int64_t KVH = 0;       // key/value heads (query head h reads kv head h / (H / KVH))
  int64_t hd = 0;        // head size; scores are scaled by 1/sqrt(hd)
};

struct AttnBlocks {
  int64_t q = 64;  // query rows per tile
  int64_t k = 64;  // key rows per tile
};

// How backward splits its work over threads:
//   kKvOuter: one pass, a task per (sequence, kv head) walks the key blocks; dq is private to the
//             task (5 tile products per tile pair);
//   kTwoPass: a task per (sequence, head, query block) for dq, then a task per (sequence, kv head,
//             key block) for dk/dv (7 tile products; more, smaller tasks);
//   kAuto:    kKvOuter when B * KVH gives every thread enough tasks, else kTwoPass.
enum class AttnBackwardMode { kAuto, kKvOuter, kTwoPass };

// out [B*T, H*hd], lse [B*T, H] (logsumexp of each row's scaled scores).
// q [B*T, H*hd], k [B*T, KVH*hd], v [B*T, KVH*hd] (RoPE already applied to q and k).
void attention_forward(float* out, float* lse, const float* q, const float* k, const float* v, const AttnShape& s,
                       AttnBlocks blocks = {});

// dq [B*T, H*hd], dk, dv [B*T, KVH*hd] are overwritten.
// dout [B*T, H*hd]; q, k, v, out, lse as in (and from) attention_forward.
void attention_backward(float* dq, float* dk, float* dv, const float* dout, const float* q, const float* k,
                        const float* v, const float* out, const float* lse, const AttnShape& s, AttnBlocks blocks = {},
                        AttnBackwardMode mode = AttnBackwardMode::kAuto);

}  // namespace moepp
