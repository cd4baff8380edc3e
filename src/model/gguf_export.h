// The mapping of a vanilla moepp model onto llama.cpp's `llama` architecture in a GGUF file
// (Mixtral-style experts), so that llama.cpp runs the same weights and computes the same function:
//   model.embed_tokens            -> token_embd          [V, D]
//   layers.i.input_layernorm      -> blk.i.attn_norm     [D]          (F32)
//   layers.i.self_attn.{q,k}_proj -> blk.i.attn_{q,k}    rows permuted (below)
//   layers.i.self_attn.{v,o}_proj -> blk.i.attn_{v,output}
//   layers.i.post_attention_layernorm -> blk.i.ffn_norm  [D]          (F32)
//   mlp.moe.gate.wg               -> blk.i.ffn_gate_inp  [E, D]
//   experts e up_proj rows [0, I) -> blk.i.ffn_gate_exps [E, I, D];  rows [I, 2I) -> ffn_up_exps [E, I, D]
//   experts e down_proj           -> blk.i.ffn_down_exps [E, D, I]
//   model.norm / lm_head          -> output_norm [D] (F32) / output [V, D]
// (shapes row-major; GGUF lists them reversed). moepp's RoPE rotates element i of a head with i + hd/2
// (Hugging Face's rotate_half, model/rope.h); llama's rope type NORM rotates adjacent pairs (2i, 2i+1).
// The rows of Q and K are therefore permuted within each head, row p*hd/2 + i -> row 2i + p, which
// makes the attention scores, and so the whole function, identical.
//
// Only the vanilla model maps: top-k router with softmax of the top-k logits (moe_use_mixtral_gating,
// or the topk router without logits norm, which renormalises the same way), single-linear gate, no
// gating residual, no zero-computation experts, no K·x input scaling. Anything else is refused with the
// config.json key at fault (llama.cpp cannot run MoE++).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "io/gguf_writer.h"
#include "io/weight_source.h"
#include "model/model_config.h"

namespace moepp {

// The tokenizer section (tokenizer.ggml.*, model "llama" = SentencePiece): one entry per id.
struct GgufVocab {
  enum TokenType : int32_t { kNormal = 1, kUnknown = 2, kControl = 3, kUserDefined = 4, kUnused = 5, kByte = 6 };
  std::vector<std::string> tokens;
  std::vector<float> scores;
  std::vector<int32_t> types;
  int32_t bos = -1, eos = -1, unk = -1, pad = -1;  // -1: none (the key is not written)
};

// A SentencePiece-shaped vocabulary of `cfg.vocab` ids for a model without a tokenizer (the benchmark's
// random model): cfg's pad/bos/eos ids as control pieces, "<unk>", the 256 byte pieces "<0xNN>", and
// distinct filler pieces "▁tN" for the rest. Throws when the vocabulary is too small for these.
GgufVocab synthetic_gguf_vocab(const ModelConfig& cfg);

// Throws moepp::Error "SOURCE: KEY ...: llama.cpp's llama architecture cannot run this (GGUF export
// supports vanilla MoE models only)" naming the first config.json key that makes cfg not a vanilla model.
void check_llama_gguf_compatible(const ModelConfig& cfg, const std::string& source);

// The rows of a [n_heads * hd, cols] projection reordered for adjacent-pair RoPE (see above): out row
// h*hd + 2i + p = in row h*hd + p*hd/2 + i. out and in must not overlap.
void permute_rope_rows(float* out, const float* in, int64_t n_heads, int64_t hd, int64_t cols);

enum class GgufFloat { kF32, kBF16 };  // the type of every tensor of 2 or more dimensions (norms stay F32)

// Fills `w` with the llama-architecture metadata (llama.*, general.*, tokenizer.ggml.*) and tensors
// of the model (cfg, weights from src by moepp's checkpoint names). `vocab` must have cfg.vocab
// entries (or fewer: the rest are padded as unused pieces "<unused_N>"). Throws moepp::Error for a
// non-vanilla cfg, a vocabulary larger than cfg.vocab, or a missing tensor.
void build_llama_gguf(io::GgufWriter& w, const ModelConfig& cfg, const io::WeightSource& src, GgufFloat dtype,
                      const GgufVocab& vocab, const std::string& model_name);

// build_llama_gguf into a fresh writer, written atomically to `path`. Returns the file's size.
uint64_t write_llama_gguf(const std::string& path, const ModelConfig& cfg, const io::WeightSource& src,
                          GgufFloat dtype, const GgufVocab& vocab, const std::string& model_name);

}  // namespace moepp
