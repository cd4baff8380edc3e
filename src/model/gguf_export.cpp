// The llama-architecture GGUF export of a vanilla model (see gguf_export.h).
#include "model/gguf_export.h"

#include <cstdio>
#include <cstring>
#include <tuple>

#include "core/error.h"
#include "core/half_float.h"
#include "core/tensor.h"
#include "model/model_params.h"

namespace moepp {
namespace {

// LLAMA_FTYPE values of llama.cpp's general.file_type: all F32, mostly BF16.
constexpr uint32_t kFileTypeF32 = 0, kFileTypeBF16 = 32;

std::vector<uint8_t> to_bytes(const float* v, size_t n, io::GgmlType type) {
  std::vector<uint8_t> out(n * io::ggml_type_size(type));
  if (type == io::GgmlType::kF32) {
    std::memcpy(out.data(), v, n * 4);
  } else {
    for (size_t i = 0; i < n; ++i) {
      const uint16_t h = f32_to_bf16(v[i]);
      out[2 * i] = static_cast<uint8_t>(h & 0xff);
      out[2 * i + 1] = static_cast<uint8_t>(h >> 8);
    }
  }
  return out;
}

std::vector<float> read(const io::WeightSource& src, const ParamSpec& spec) {
  check(src.contains(spec.name), src.source() + ": tensor '" + spec.name + "' is missing (GGUF export)");
  const io::WeightInfo info = src.info(spec.name);
  check(info.shape == spec.shape, src.source() + ": tensor '" + spec.name + "' has the wrong shape (GGUF export)");
  std::vector<float> v(Tensor::numel_of(spec.shape));
  src.read_f32(spec.name, v.data());
  return v;
}

}  // namespace

GgufVocab synthetic_gguf_vocab(const ModelConfig& cfg) {
  const int64_t V = cfg.vocab;
  GgufVocab v;
  v.tokens.resize(V);
  v.scores.assign(V, 0.0f);
  v.types.assign(V, GgufVocab::kNormal);
  std::vector<bool> used(V, false);
  auto special = [&](int32_t id, const std::string& piece, int32_t type) {
    if (id < 0 || id >= V || used[id]) return;
    v.tokens[id] = piece;
    v.types[id] = type;
    used[id] = true;
  };
  special(cfg.pad, "<pad>", GgufVocab::kControl);
  special(cfg.bos, "<s>", GgufVocab::kControl);
  special(cfg.eos, "</s>", GgufVocab::kControl);
  int64_t next = 0;
  auto free_id = [&] {
    while (next < V && used[next]) ++next;
    check(next < V, "gguf export: vocab_size " + std::to_string(V) +
                        " is too small for a SentencePiece vocabulary (specials, <unk>, 256 bytes)");
    used[next] = true;
    return next;
  };
  const int64_t unk = free_id();
  v.tokens[unk] = "<unk>";
  v.types[unk] = GgufVocab::kUnknown;
  for (int b = 0; b < 256; ++b) {
    const int64_t id = free_id();
    char piece[8];
    std::snprintf(piece, sizeof piece, "<0x%02X>", b);
    v.tokens[id] = piece;
    v.types[id] = GgufVocab::kByte;
  }
  for (int64_t id = 0; id < V; ++id)
    if (!used[id]) {
      v.tokens[id] = "\xe2\x96\x81t" + std::to_string(id);  // "▁tN"
      v.scores[id] = -static_cast<float>(id);
    }
  v.bos = cfg.bos >= 0 && cfg.bos < V ? cfg.bos : -1;
  v.eos = cfg.eos >= 0 && cfg.eos < V ? cfg.eos : -1;
  v.pad = cfg.pad >= 0 && cfg.pad < V ? cfg.pad : -1;
  v.unk = static_cast<int32_t>(unk);
  return v;
}

void check_llama_gguf_compatible(const ModelConfig& cfg, const std::string& source) {
  const MoeConfig& m = cfg.moe;
  auto refuse = [&](const std::string& key, const std::string& why) {
    throw Error(source + ": " + key + " " + why +
                ": llama.cpp's llama architecture cannot run this (GGUF export supports vanilla MoE models only)");
  };
  if (m.n_zero > 0) refuse("n_zero_experts", "= " + std::to_string(m.n_zero) + " (zero-computation experts)");
  if (m.n_copy > 0) refuse("n_copy_experts", "= " + std::to_string(m.n_copy) + " (zero-computation experts)");
  if (m.n_constant > 0)
    refuse("n_constant_experts", "= " + std::to_string(m.n_constant) + " (zero-computation experts)");
  if (m.router != RouterKind::kTopK)
    refuse("moe_router", std::string("= ") + router_name(m.router) + " (only topk maps to llama's softmax gating)");
  if (m.two_layer_gate) refuse("moe_2layer_gate", "= true (llama's router is one linear layer)");
  if (m.logits_norm) refuse("moe_use_logits_norm", "= true (router logit normalisation)");
  if (m.gating_residual) refuse("moe_gating_residual", "= true (gating residual between layers)");
  if (m.scales_input())
    refuse("moe_use_mixtral_gating", "and moe_feature_no_mul_topk are both false (the experts' input is scaled by K)");
  if (m.n_ffn() < 1) refuse("num_experts", "has no FFN expert");
}

void permute_rope_rows(float* out, const float* in, int64_t n_heads, int64_t hd, int64_t cols) {
  const int64_t half = hd / 2;
  for (int64_t h = 0; h < n_heads; ++h)
    for (int64_t p = 0; p < 2; ++p)
      for (int64_t i = 0; i < half; ++i)
        std::memcpy(out + (h * hd + 2 * i + p) * cols, in + (h * hd + p * half + i) * cols,
                    static_cast<size_t>(cols) * sizeof(float));
}

void build_llama_gguf(io::GgufWriter& w, const ModelConfig& cfg, const io::WeightSource& src, GgufFloat dtype,
                      const GgufVocab& vocab, const std::string& model_name) {
  check_llama_gguf_compatible(cfg, src.source());
  const int64_t V = cfg.vocab, D = cfg.hidden, I = cfg.moe.intermediate, E = cfg.moe.n_ffn();
  check(static_cast<int64_t>(vocab.tokens.size()) <= V && vocab.scores.size() == vocab.tokens.size() &&
            vocab.types.size() == vocab.tokens.size(),
        "gguf export: the tokenizer has " + std::to_string(vocab.tokens.size()) + " pieces, more than vocab_size " +
            std::to_string(V) + " (or its score/type lists differ in length)");
  const io::GgmlType big = dtype == GgufFloat::kF32 ? io::GgmlType::kF32 : io::GgmlType::kBF16;

  w.add_string("general.architecture", "llama");
  w.add_string("general.name", model_name);
  w.add_u32("general.file_type", dtype == GgufFloat::kF32 ? kFileTypeF32 : kFileTypeBF16);
  w.add_u32("llama.vocab_size", static_cast<uint32_t>(V));
  w.add_u32("llama.context_length", static_cast<uint32_t>(cfg.max_pos));
  w.add_u32("llama.embedding_length", static_cast<uint32_t>(D));
  w.add_u32("llama.block_count", static_cast<uint32_t>(cfg.n_layers));
  w.add_u32("llama.feed_forward_length", static_cast<uint32_t>(I));
  w.add_u32("llama.attention.head_count", static_cast<uint32_t>(cfg.n_heads));
  w.add_u32("llama.attention.head_count_kv", static_cast<uint32_t>(cfg.n_kv_heads));
  w.add_u32("llama.rope.dimension_count", static_cast<uint32_t>(cfg.head_dim));
  w.add_f32("llama.rope.freq_base", cfg.rope_theta);
  w.add_f32("llama.attention.layer_norm_rms_epsilon", cfg.rms_eps);
  w.add_u32("llama.expert_count", static_cast<uint32_t>(E));
  w.add_u32("llama.expert_used_count", static_cast<uint32_t>(cfg.moe.top_k));

  std::vector<std::string> tokens = vocab.tokens;
  std::vector<float> scores = vocab.scores;
  std::vector<int32_t> types = vocab.types;
  for (int64_t id = static_cast<int64_t>(tokens.size()); id < V; ++id) {
    tokens.push_back("<unused_" + std::to_string(id) + ">");
    scores.push_back(0.0f);
    types.push_back(GgufVocab::kUnused);
  }
  w.add_string("tokenizer.ggml.model", "llama");
  w.add_string_array("tokenizer.ggml.tokens", tokens);
  w.add_f32_array("tokenizer.ggml.scores", scores);
  w.add_i32_array("tokenizer.ggml.token_type", types);
  if (vocab.bos >= 0) w.add_u32("tokenizer.ggml.bos_token_id", static_cast<uint32_t>(vocab.bos));
  if (vocab.eos >= 0) w.add_u32("tokenizer.ggml.eos_token_id", static_cast<uint32_t>(vocab.eos));
  if (vocab.unk >= 0) w.add_u32("tokenizer.ggml.unknown_token_id", static_cast<uint32_t>(vocab.unk));
  if (vocab.pad >= 0) w.add_u32("tokenizer.ggml.padding_token_id", static_cast<uint32_t>(vocab.pad));
  w.add_bool("tokenizer.ggml.add_bos_token", vocab.bos >= 0);
  w.add_bool("tokenizer.ggml.add_eos_token", false);

  // Tensors in llama.cpp's usual order; the experts of a block are gathered into 3-D tensors.
  const std::vector<ParamSpec> specs = param_specs(cfg);
  auto find = [&](ParamKind kind, int64_t layer) -> const ParamSpec& {
    for (const ParamSpec& s : specs)
      if (s.kind == kind && s.layer == layer) return s;
    throw Error("gguf export: no tensor of that kind in the model's specs");
  };
  auto add = [&](const std::string& name, const std::vector<int64_t>& shape, const std::vector<float>& v,
                 io::GgmlType type) { w.add_tensor(name, shape, type, to_bytes(v.data(), v.size(), type)); };

  add("token_embd.weight", {V, D}, read(src, find(ParamKind::kEmbed, -1)), big);
  for (int64_t l = 0; l < cfg.n_layers; ++l) {
    const std::string b = "blk." + std::to_string(l) + ".";
    add(b + "attn_norm.weight", {D}, read(src, find(ParamKind::kAttnNorm, l)), io::GgmlType::kF32);
    for (const auto& [kind, suffix, heads] :
         {std::tuple{ParamKind::kWq, "attn_q", cfg.n_heads}, std::tuple{ParamKind::kWk, "attn_k", cfg.n_kv_heads}}) {
      const ParamSpec& s = find(kind, l);
      const std::vector<float> in = read(src, s);
      std::vector<float> out(in.size());
      permute_rope_rows(out.data(), in.data(), heads, cfg.head_dim, D);
      add(b + suffix + ".weight", s.shape, out, big);
    }
    add(b + "attn_v.weight", find(ParamKind::kWv, l).shape, read(src, find(ParamKind::kWv, l)), big);
    add(b + "attn_output.weight", find(ParamKind::kWo, l).shape, read(src, find(ParamKind::kWo, l)), big);
    add(b + "ffn_norm.weight", {D}, read(src, find(ParamKind::kMlpNorm, l)), io::GgmlType::kF32);

    std::vector<float> gate_exps(E * I * D), up_exps(E * I * D), down_exps(E * D * I);
    bool have_router = false;
    for (const ParamSpec& s : specs) {
      if (s.kind != ParamKind::kMoe || s.layer != l) continue;
      switch (s.moe.kind) {
        case MoeParamKind::kWg:
          add(b + "ffn_gate_inp.weight", {E, D}, read(src, s), big);
          have_router = true;
          break;
        case MoeParamKind::kUp: {
          const std::vector<float> v = read(src, s);  // [2I, D]: gate rows, then up rows
          std::memcpy(gate_exps.data() + s.moe.index * I * D, v.data(), I * D * sizeof(float));
          std::memcpy(up_exps.data() + s.moe.index * I * D, v.data() + I * D, I * D * sizeof(float));
          break;
        }
        case MoeParamKind::kDown: {
          const std::vector<float> v = read(src, s);  // [D, I]
          std::memcpy(down_exps.data() + s.moe.index * D * I, v.data(), D * I * sizeof(float));
          break;
        }
        default:
          throw Error("gguf export: unexpected MoE tensor '" + s.name + "' in a vanilla model");
      }
    }
    check(have_router, "gguf export: block " + std::to_string(l) + " has no router");
    add(b + "ffn_gate_exps.weight", {E, I, D}, gate_exps, big);
    add(b + "ffn_down_exps.weight", {E, D, I}, down_exps, big);
    add(b + "ffn_up_exps.weight", {E, I, D}, up_exps, big);
  }
  add("output_norm.weight", {D}, read(src, find(ParamKind::kFinalNorm, -1)), io::GgmlType::kF32);
  add("output.weight", {V, D}, read(src, find(ParamKind::kLmHead, -1)), big);
}

uint64_t write_llama_gguf(const std::string& path, const ModelConfig& cfg, const io::WeightSource& src,
                          GgufFloat dtype, const GgufVocab& vocab, const std::string& model_name) {
  io::GgufWriter w;
  build_llama_gguf(w, cfg, src, dtype, vocab, model_name);
  w.write(path);
  return w.header_bytes().size() + w.data_bytes();
}

}  // namespace moepp
