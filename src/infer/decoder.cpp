// Decoder: the inference forward pass over a KV cache (see decoder.h). Per block: RMSNorm -> q/k/v
// projections -> RoPE at each row's own position -> append k/v to the cache -> attention of every
// new row over its slot's cached keys (tiles of query rows, sgemm for scores and values; a single
// row, a decode step, takes the fused kernel of core/attention_row.h) -> o_proj ->
// RMSNorm -> MoE++ (router, dispatch and combine of src/moe; FFN experts on WeightMatrix) -> residual.
#include "infer/decoder.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <exception>
#include <limits>
#include <set>
#include <string>

#include "core/error.h"
#include "core/profile.h"
#include "core/attention_row.h"
#include "core/gemm.h"
#include "model/embedding.h"
#include "model/rmsnorm.h"
#include "model/rope.h"
#include "infer/decoder_followers.h"
#include "infer/expert_group_ffn.h"
#include "infer/matrix_experts.h"
#include "moe/moe_block.h"

namespace moepp {
namespace {

constexpr int64_t kQueryTile = 32;  // query rows per attention work item

struct AttnItem {
  int64_t row0, n;     // new rows [row0, row0 + n) of the batch
  int64_t pos0;        // position of row0 in its slot
  int64_t slot, head;
};

}  // namespace

KvDType default_kv_dtype(WeightDType weights) { return weights == WeightDType::kF32 ? KvDType::kF32 : KvDType::kBF16; }

std::optional<KvDType> parse_kv_dtype_choice(const std::string& s, const std::string& who) {
  if (s == "auto") return std::nullopt;
  check(s == "f32" || s == "bf16", who + " must be auto, f32 or bf16, got '" + s + "'");
  return parse_kv_dtype(s, who);
}

Decoder::Decoder(ModelConfig cfg, InferWeights w, Comm* expert_group, std::optional<KvDType> kv_dtype)
    : cfg_(std::move(cfg)), w_(std::move(w)), kv_dtype_(kv_dtype.value_or(default_kv_dtype(w_.dtype))),
      group_(expert_group) {
  cfg_.validate("Decoder");
  const int G = group_ ? group_->size() : 1, g = group_ ? group_->rank() : 0;
  check(w_.shard.count == G && w_.shard.index == g,
        "Decoder: the weights hold FFN expert shard " + std::to_string(w_.shard.index) + " of " +
            std::to_string(w_.shard.count) + ", but this rank is " + std::to_string(g) + " of an expert group of " +
            std::to_string(G));
  if (group_) group_stats_.assign(cfg_.n_layers, {});
  check(static_cast<int64_t>(w_.layers.size()) == cfg_.n_layers, "Decoder: the weights have " +
                                                                      std::to_string(w_.layers.size()) +
                                                                      " layers, the config " +
                                                                      std::to_string(cfg_.n_layers));
  for (int64_t i = 0; i < cfg_.n_layers; ++i) layers_.emplace_back(cfg_.layer_moe(static_cast<int>(i), false));
  rope_.build(cfg_.max_pos, cfg_.head_dim, cfg_.rope_theta);
}

std::vector<int32_t> Decoder::max_ffn_experts() const {
  std::vector<int32_t> m;
  for (const MoeLayer& layer : layers_)
    m.push_back(static_cast<int32_t>(std::min(layer.config().slot_width(), layer.config().n_ffn())));
  return m;
}

KvCache Decoder::make_cache(int64_t n_slots, int64_t max_len) const {
  check(max_len <= cfg_.max_pos, "Decoder: cache length " + std::to_string(max_len) +
                                     " exceeds max_position_embeddings = " + std::to_string(cfg_.max_pos));
  return KvCache(cfg_.n_layers, n_slots, max_len, cfg_.n_kv_heads, cfg_.head_dim, kv_dtype_);
}

// Rows of one pass, in chunk order: built by plan_rows() once the batch is validated.
struct Decoder::RowPlan {
  int64_t R = 0;                  // new rows (sum of the chunks' n)
  std::vector<int32_t> tokens;    // [R] token id of each row
  std::vector<AttnItem> items;    // attention work items, longest tiles first
  std::vector<int64_t> out_rows;  // rows whose logits are returned, in output order
};

void Decoder::check_batch(const KvCache& cache, const std::vector<DecodeChunk>& batch) const {
  const int64_t V = cfg_.vocab;
  check(!batch.empty(), "Decoder::forward: empty batch");
  check(cache.n_layers() == cfg_.n_layers && cache.n_kv_heads() == cfg_.n_kv_heads && cache.head_dim() == cfg_.head_dim &&
            cache.dtype() == kv_dtype_,
        "Decoder::forward: the cache was not made for this model");
  std::set<int64_t> slots;
  for (const DecodeChunk& c : batch) {
    check(c.slot >= 0 && c.slot < cache.n_slots(), "Decoder::forward: slot " + std::to_string(c.slot) +
                                                       " outside [0, " + std::to_string(cache.n_slots()) + ")");
    check(slots.insert(c.slot).second, "Decoder::forward: slot " + std::to_string(c.slot) + " appears twice");
    check(c.n > 0 && c.tokens != nullptr, "Decoder::forward: a chunk has no tokens (slot " + std::to_string(c.slot) + ")");
    const int64_t end = cache.length(c.slot) + c.n;
    check(end <= cache.max_len(), "Decoder::forward: slot " + std::to_string(c.slot) + " would hold " +
                                      std::to_string(end) + " positions, more than the cache's " +
                                      std::to_string(cache.max_len()));
    for (int64_t i = 0; i < c.n; ++i)
      check(c.tokens[i] >= 0 && c.tokens[i] < V, "Decoder::forward: token id " + std::to_string(c.tokens[i]) +
                                                     " is outside the vocabulary [0, " + std::to_string(V) + ")");
  }
}

Decoder::RowPlan Decoder::plan_rows(const KvCache& cache, const std::vector<DecodeChunk>& batch,
                                    std::vector<int64_t>& pos) const {
  const int64_t H = cfg_.n_heads;
  RowPlan plan;
  for (const DecodeChunk& c : batch) plan.R += c.n;
  plan.tokens.resize(plan.R);
  pos.resize(plan.R);
  int64_t r = 0;
  for (const DecodeChunk& c : batch) {
    const int64_t p0 = cache.length(c.slot);
    for (int64_t i = 0; i < c.n; ++i) {
      plan.tokens[r + i] = c.tokens[i];
      pos[r + i] = p0 + i;
    }
    for (int64_t i0 = 0; i0 < c.n; i0 += kQueryTile)
      for (int64_t h = 0; h < H; ++h)
        plan.items.push_back({r + i0, std::min(kQueryTile, c.n - i0), p0 + i0, c.slot, h});
    if (c.all_logits)
      for (int64_t i = 0; i < c.n; ++i) plan.out_rows.push_back(r + i);
    else
      plan.out_rows.push_back(r + c.n - 1);
    r += c.n;
  }
  // Longest tiles first, so dynamic scheduling balances the threads.
  std::stable_sort(plan.items.begin(), plan.items.end(), [](const AttnItem& a, const AttnItem& b) {
    return a.pos0 + a.n > b.pos0 + b.n;
  });
  return plan;
}

void Decoder::embed_rows(const RowPlan& plan, DecoderScratch& sc) const {
  const int64_t R = plan.R, D = cfg_.hidden, Q = cfg_.n_heads * cfg_.head_dim, KV = cfg_.n_kv_heads * cfg_.head_dim;
  ensure_shape(sc.h, {R, D});
  embedding_forward(sc.h.ptr(), plan.tokens.data(), w_.embed.ptr(), R, D);
  ensure_shape(sc.xn, {R, D});
  ensure_shape(sc.q, {R, Q});
  ensure_shape(sc.k, {R, KV});
  ensure_shape(sc.v, {R, KV});
  ensure_shape(sc.att, {R, Q});
  sc.rstd.resize(R);
  sc.z.resize(cfg_.n_layers);
  sc.row_ffn.assign(static_cast<size_t>(R * cfg_.n_layers), 0);
}

namespace {

// Stores the new rows' keys/values k, v [R, KV] of layer l after each chunk's cached positions.
void append_kv(KvCache& cache, int64_t l, const std::vector<DecodeChunk>& batch, const float* k, const float* v,
               int64_t KV) {
  int64_t r = 0;
  for (const DecodeChunk& c : batch) {
    cache.write(l, c.slot, cache.length(c.slot), c.n, k + r * KV, v + r * KV);
    r += c.n;
  }
}

// att [R, H*hd] = causal softmax(q K^T * scale) V of every work item, over layer l of the cache (which
// already holds the new rows' keys/values). q is [R, H*hd]; heads share kv heads in groups of `group`.
// Tiles of query rows take sgemm for the scores and the values (a BF16 cache's keys and values of the
// item widened into a buffer first); a single row (a decode step) takes the fused attention_row kernel,
// which reads the cache in its own dtype.
void attend(float* att, const float* q, const KvCache& kc, int64_t l, const std::vector<AttnItem>& items,
            int64_t hd, int64_t Q, int64_t group, float scale) {
  const bool bf16 = kc.dtype() == KvDType::kBF16;
#pragma omp parallel
  {
    // Per-thread buffers, kept between calls (resizing only grows them): the scores of one item, and
    // a BF16 cache's widened keys and values of one item ([keys, hd] each).
    thread_local std::vector<float> s, kw, vw;
    if (s.size() < static_cast<size_t>(kQueryTile * kc.max_len())) s.resize(static_cast<size_t>(kQueryTile * kc.max_len()));
    if (bf16 && kw.size() < static_cast<size_t>(kc.max_len() * hd)) {
      kw.resize(static_cast<size_t>(kc.max_len() * hd));
      vw.resize(kw.size());
    }
#pragma omp for schedule(dynamic, 1)
    for (size_t it = 0; it < items.size(); ++it) {
      const AttnItem& a = items[it];
      const int64_t keys = a.pos0 + a.n;  // row i sees keys [0, pos0 + i]
      const int64_t kvh = a.head / group;
      const float* qp = q + a.row0 * Q + a.head * hd;
      float* out = att + a.row0 * Q + a.head * hd;
      if (a.n == 1) {
        if (bf16)
          attention_row_bf16(out, s.data(), qp, kc.bf16_keys(l, a.slot, kvh), kc.bf16_values(l, a.slot, kvh), keys,
                             hd, scale);
        else
          attention_row_f32(out, s.data(), qp, kc.keys(l, a.slot, kvh, keys, nullptr),
                            kc.values(l, a.slot, kvh, keys, nullptr), keys, hd, scale);
        continue;
      }
      const float* kp = kc.keys(l, a.slot, kvh, keys, kw.data());
      const float* vp = kc.values(l, a.slot, kvh, keys, vw.data());
      // S [n, keys] = q · K^T * scale
      sgemm(false, true, a.n, keys, hd, scale, qp, Q, kp, hd, 0.0f, s.data(), keys);
      for (int64_t i = 0; i < a.n; ++i) causal_softmax_row(s.data() + i * keys, a.pos0 + i + 1, keys);
      // out [n, hd] = P · V
      sgemm(false, false, a.n, hd, keys, 1.0f, s.data(), keys, vp, hd, 0.0f, out, Q);
    }
  }
}

}  // namespace

void Decoder::attention_block(int64_t l, const RowPlan& plan, KvCache& cache, const std::vector<DecodeChunk>& batch,
                              DecoderScratch& sc) const {
  const int64_t R = plan.R, D = cfg_.hidden, H = cfg_.n_heads, KVH = cfg_.n_kv_heads, hd = cfg_.head_dim;
  const InferWeights::Layer& w = w_.layers[l];
  {
    ProfileScope ps("infer.qkv");
    rmsnorm_forward(sc.xn.ptr(), sc.rstd.data(), sc.h.ptr(), w.attn_norm.ptr(), R, D, cfg_.rms_eps);
    w.wq.matmul(sc.q.ptr(), sc.xn.ptr(), R);
    w.wk.matmul(sc.k.ptr(), sc.xn.ptr(), R);
    w.wv.matmul(sc.v.ptr(), sc.xn.ptr(), R);
    rope_rows(sc.q.ptr(), rope_, sc.pos.data(), R, H, hd);
    rope_rows(sc.k.ptr(), rope_, sc.pos.data(), R, KVH, hd);
    append_kv(cache, l, batch, sc.k.ptr(), sc.v.ptr(), KVH * hd);
  }
  {
    ProfileScope ps("infer.attend");
    const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
    attend(sc.att.ptr(), sc.q.ptr(), cache, l, plan.items, hd, H * hd, H / KVH, scale);
  }
  ProfileScope ps("infer.wo");
  w.wo.matmul(sc.h.ptr(), sc.att.ptr(), R, /*accumulate=*/true);
}

void Decoder::moe_block(int64_t l, int64_t R, DecoderScratch& sc, std::vector<Tensor>* router_logits) const {
  const int64_t D = cfg_.hidden;
  const InferWeights::Layer& w = w_.layers[l];
  rmsnorm_forward(sc.xn.ptr(), sc.rstd.data(), sc.h.ptr(), w.mlp_norm.ptr(), R, D, cfg_.rms_eps);
  const MoeConfig& mc = layers_[l].config();
  MoeForwardState& st = sc.moe;
  {
    ProfileScope ps("infer.route");
    moe_route(st, sc.xn.ptr(), mc.uses_residual() ? sc.z[l - 1].ptr() : nullptr, w.moe_small, mc, R);
  }
  ProfileScope ps("infer.experts");
  MatrixFfnExperts experts(w.up, w.down, sc.ffn_x, sc.ffn_h, sc.ffn_a, w.ffn_first, w.ffn_end);
  ensure_shape(sc.y, {R, D});
  if (group_) {
    ExpertGroupFfn group_experts(experts, w.ffn_first, w.ffn_end, *group_, group_stats_[l]);
    moe_block_combine(sc.y.ptr(), st, group_experts, w.moe_small, mc);
  } else {
    moe_block_combine(sc.y.ptr(), st, experts, w.moe_small, mc);
  }
  sc.moe_rows += R;
  sc.ffn_slots += st.ffn_rows();
  const int64_t W = st.W, L = cfg_.n_layers;
  for (int64_t t = 0; t < R; ++t) {
    int32_t n = 0;
    for (int64_t k = 0; k < W; ++k) n += st.row_of_slot[t * W + k] >= 0;
    sc.row_ffn[t * L + l] = n;
  }
  sc.z[l].shape = st.z.shape;
  sc.z[l].data.assign(st.z.data.begin(), st.z.data.end());
  if (router_logits) (*router_logits)[l] = sc.z[l];
  float* hp = sc.h.ptr();
  const float* yp = sc.y.ptr();
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < R * D; ++i) hp[i] += yp[i];
}

void Decoder::final_head(Tensor& logits, const std::vector<int64_t>& out_rows, DecoderScratch& sc) const {
  const int64_t V = cfg_.vocab, D = cfg_.hidden, R_out = static_cast<int64_t>(out_rows.size());
  ProfileScope ps("infer.head");
  ensure_shape(sc.logits_x, {R_out, D});
  for (int64_t i = 0; i < R_out; ++i)
    std::memcpy(sc.logits_x.ptr() + i * D, sc.h.ptr() + out_rows[i] * D, sizeof(float) * D);
  ensure_shape(sc.xn, {R_out, D});
  rmsnorm_forward(sc.xn.ptr(), sc.rstd.data(), sc.logits_x.ptr(), w_.final_norm.ptr(), R_out, D, cfg_.rms_eps);
  ensure_shape(logits, {R_out, V});
  w_.lm_head.matmul(logits.ptr(), sc.xn.ptr(), R_out);
}

void Decoder::forward(Tensor& logits, KvCache& cache, const std::vector<DecodeChunk>& batch, DecoderScratch& sc,
                      std::vector<Tensor>* router_logits) const {
  check_batch(cache, batch);  // everything is validated before the cache is touched
  if (!group_) {
    run(logits, cache, batch, sc, router_logits);
    return;
  }
  if (group_->rank() == 0) announce_forward(*group_, cache, batch, router_logits != nullptr);
  try {
    run(logits, cache, batch, sc, router_logits);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "moepp: error (rank %d of an expert group of %d): decoder pass failed: %s; ending the job\n",
                 group_->rank(), group_->size(), e.what());
    std::fflush(stderr);
    group_->abort(1);
  }
}

void Decoder::copy_cache_slot(KvCache& cache, int64_t dst, int64_t src) const {
  check(src >= 0 && src < cache.n_slots() && dst >= 0 && dst < cache.n_slots(),
        "Decoder::copy_cache_slot: slot " + std::to_string(src) + " or " + std::to_string(dst) + " outside [0, " +
            std::to_string(cache.n_slots()) + ")");
  if (group_ && group_->rank() == 0) announce_copy(*group_, cache, dst, src);
  cache.copy_slot(dst, src);
}

void Decoder::run(Tensor& logits, KvCache& cache, const std::vector<DecodeChunk>& batch, DecoderScratch& sc,
                  std::vector<Tensor>* router_logits) const {
  const RowPlan plan = plan_rows(cache, batch, sc.pos);
  embed_rows(plan, sc);
  if (router_logits) router_logits->resize(cfg_.n_layers);
  for (int64_t l = 0; l < cfg_.n_layers; ++l) {
    attention_block(l, plan, cache, batch, sc);
    moe_block(l, plan.R, sc, router_logits);
  }
  for (const DecodeChunk& c : batch) cache.set_length(c.slot, cache.length(c.slot) + c.n);
  final_head(logits, plan.out_rows, sc);
  const int64_t L = cfg_.n_layers;
  sc.logit_ffn.resize(plan.out_rows.size() * L);
  for (size_t i = 0; i < plan.out_rows.size(); ++i)
    std::copy_n(sc.row_ffn.begin() + plan.out_rows[i] * L, L, sc.logit_ffn.begin() + static_cast<int64_t>(i) * L);
}

}  // namespace moepp
