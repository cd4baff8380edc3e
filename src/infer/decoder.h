// Decoder: the MoE++ decoder's inference forward pass over a KV cache, for a batch of sequences that
// each add any number of new tokens (prefill chunks and single decode tokens mixed in one pass:
// continuous batching). Rows of all sequences go through the projections and MoE++ layers together;
// attention reads each sequence's own cache slot. The gating residual is per token within a pass
// (spec §1), so decoding token by token gives the logits of recomputing the whole sequence.
//
// Expert-parallel inference: a Decoder may be given an expert group (a Comm of G ranks, each holding
// FFN expert shard g of G: InferWeights::shard). Every rank then runs the dense part on the same
// tokens and its own experts' FFN rows, and one allreduce per MoE block gives every rank every row
// (expert_group_ffn.h): the logits equal one process's bit for bit. Rank 0 of the group leads: each
// forward() there first describes the call to the others (decoder_followers.h), which run the same
// forward in follow_decoder(). Under a group, forward() is called by one thread at a time.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "comm/comm.h"
#include "core/tensor.h"
#include "infer/expert_group_ffn.h"
#include "infer/infer_weights.h"
#include "infer/kv_cache.h"
#include "model/model_config.h"
#include "model/rope.h"
#include "moe/moe_layer.h"
#include "moe/moe_state.h"

namespace moepp {

// New tokens of one sequence: they take positions cache.length(slot) ... + n - 1 of its slot.
struct DecodeChunk {
  int64_t slot = 0;
  const int32_t* tokens = nullptr;
  int64_t n = 0;
  bool all_logits = false;  // logits for every new token (scoring); else for the last one only
};

// Per-call scratch, reused across calls (one per thread that calls forward()).
struct DecoderScratch {
  Tensor h, xn, q, k, v, att, y, logits_x;  // [rows, ...] activations of the pass
  std::vector<Tensor> z;                    // per layer [rows, E] router logits
  std::vector<float> rstd;                  // [rows]
  std::vector<int64_t> pos;                 // [rows] position of each row in its slot
  MoeForwardState moe;                      // router / dispatch state of the current block
  Tensor ffn_x, ffn_h, ffn_a;               // one expert's gathered inputs and activations
  // Routing counters, accumulated over every pass with this scratch (the caller resets them): rows
  // through MoE blocks (rows x layers) and the FFN slots they kept.
  int64_t moe_rows = 0, ffn_slots = 0;
  // Per row, of the last pass only: how many FFN experts each MoE layer ran for it (its FFN slots that
  // the router kept, --zc-bias included, and that reached their expert; zero-computation experts are
  // not counted). row_ffn [R, n_layers] for every new row (chunk order); logit_ffn [R_out, n_layers]
  // for the rows whose logits forward() wrote, in the logits' order. Summed over rows and layers they
  // are the pass's share of ffn_slots.
  std::vector<int32_t> row_ffn, logit_ffn;
};

// The KV cache dtype a decoder uses unless told otherwise: fp32 with F32 weights (the exact path),
// bf16 with BF16, INT8 and Q4 weights (half the cache bytes per decoded token; docs/inference.md has
// the measured cost).
KvDType default_kv_dtype(WeightDType weights);
// A --kv-dtype value: "auto" (nullopt: default_kv_dtype of the weights), "f32" or "bf16"; anything
// else throws moepp::Error naming `who` and the accepted values.
std::optional<KvDType> parse_kv_dtype_choice(const std::string& s, const std::string& who);

class Decoder {
 public:
  // expert_group: null for one process; else every rank of it holds shard group->rank() of
  // group->size() of the FFN experts (w.shard; checked) and the group must outlive the decoder.
  // kv_dtype: the dtype of the caches make_cache() makes (default_kv_dtype(w.dtype) when not given).
  Decoder(ModelConfig cfg, InferWeights w, Comm* expert_group = nullptr,
          std::optional<KvDType> kv_dtype = std::nullopt);
  const ModelConfig& config() const { return cfg_; }
  const InferWeights& weights() const { return w_; }
  Comm* expert_group() const { return group_; }
  KvDType kv_dtype() const { return kv_dtype_; }
  // Under an expert group: what each layer's FFN allreduce exchanged so far ([n_layers]; empty
  // without a group).
  const std::vector<ExpertGroupStats>& expert_group_stats() const { return group_stats_; }

  // The most FFN experts one token can use in each layer ([n_layers]): the router's slots per token
  // (K; every expert for the ReLU router), at most the layer's FFN experts. The bound of row_ffn.
  std::vector<int32_t> max_ffn_experts() const;

  // A cache sized for this model, in kv_dtype().
  KvCache make_cache(int64_t n_slots, int64_t max_len) const;

  // Runs every chunk's new tokens, appends their keys/values to their slots (lengths advance by n),
  // and writes logits [R, V] for the requested rows, in chunk order (R = sum of n or 1 per chunk).
  // router_logits, when not null, receives per layer [rows, E] for all new rows (in chunk order).
  // Callers pass token ids in [0, vocab): the entry points validate them once (Engine::submit for
  // generate and serve, the tokenizer-built inputs of eval, perplexity()'s own check). forward() still
  // checks every id, a cheap internal guard for library callers (score_mc takes encoded items from
  // anywhere) since an id outside the vocabulary would read outside the embedding table.
  // Throws moepp::Error (cache unchanged) on a cache not made for this model and kv_dtype(), an empty
  // chunk, a token id outside the vocabulary, a slot out of range or used twice, or a chunk that would
  // overflow the slot's max_len.
  // Under an expert group: on rank 0 a valid call is first announced to the other ranks; the others
  // call forward only from follow_decoder(). A failure after the checks (the ranks are then inside
  // the pass's collectives) prints the error and aborts the job, so that no rank waits forever.
  void forward(Tensor& logits, KvCache& cache, const std::vector<DecodeChunk>& batch, DecoderScratch& scratch,
               std::vector<Tensor>* router_logits = nullptr) const;

  // cache.copy_slot(dst, src) (kv_cache.h); under an expert group rank 0 first announces it, so that
  // the followers' caches stay the same. The one way to write a cache other than forward().
  void copy_cache_slot(KvCache& cache, int64_t dst, int64_t src) const;

 private:
  struct RowPlan;  // tokens, output rows and attention work items of one pass (decoder.cpp)

  // The phases of forward(), in order. check_batch throws on an invalid batch and writes nothing;
  // plan_rows fills pos [R] with each row's position; embed_rows sizes the scratch and writes sc.h;
  // attention_block and moe_block add layer l's residual branches to sc.h (attention_block appends
  // the rows' keys/values to the cache; moe_block keeps sc.z[l], copied to router_logits when given);
  // final_head writes logits [out_rows, V] from sc.h.
  void check_batch(const KvCache& cache, const std::vector<DecodeChunk>& batch) const;
  RowPlan plan_rows(const KvCache& cache, const std::vector<DecodeChunk>& batch, std::vector<int64_t>& pos) const;
  void embed_rows(const RowPlan& plan, DecoderScratch& sc) const;
  void attention_block(int64_t l, const RowPlan& plan, KvCache& cache, const std::vector<DecodeChunk>& batch,
                       DecoderScratch& sc) const;
  void moe_block(int64_t l, int64_t R, DecoderScratch& sc, std::vector<Tensor>* router_logits) const;
  void final_head(Tensor& logits, const std::vector<int64_t>& out_rows, DecoderScratch& sc) const;
  void run(Tensor& logits, KvCache& cache, const std::vector<DecodeChunk>& batch, DecoderScratch& sc,
           std::vector<Tensor>* router_logits) const;  // the pass, after check_batch

  ModelConfig cfg_;
  InferWeights w_;
  KvDType kv_dtype_;              // of the caches make_cache() makes
  std::vector<MoeLayer> layers_;  // inference-mode layer configs (router, dispatch, combine)
  RopeTable rope_;                // cos/sin for positions [0, max_position_embeddings)
  Comm* group_ = nullptr;         // expert group (not owned), or null
  mutable std::vector<ExpertGroupStats> group_stats_;  // [n_layers] under a group
};

}  // namespace moepp
