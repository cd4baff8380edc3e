// GpuModelParams: upload, download and the BF16 copies of the decoder's tensors (see gpu_model_params.h).
#include "gpu/gpu_model_params.h"

#include "core/error.h"
#include "gpu/cuda_check.h"

namespace moepp::gpu {
namespace {

void put(DeviceBuffer<float>& dst, const Tensor& t, cudaStream_t s) { upload(dst, t.ptr(), t.numel(), s); }

void get(Tensor& t, const DeviceBuffer<float>& src, const char* what, cudaStream_t s) {
  check(src.size() == t.numel(), std::string("GpuModelParams::download: ") + what + " does not match the config");
  if (t.numel()) MOEPP_CUDA(cudaMemcpyAsync(t.ptr(), src.get(), t.numel() * sizeof(float), cudaMemcpyDeviceToHost, s));
}

void bf16_copy(DeviceBuffer<__nv_bfloat16>& dst, const DeviceBuffer<float>& src, cudaStream_t s) {
  dst.ensure(src.size());
  convert_to_bf16(dst.get(), src.get(), static_cast<int64_t>(src.size()), s);
}

}  // namespace

GpuModelParams GpuModelParams::upload(const ModelParams& p, const ModelConfig& cfg, Precision prec, cudaStream_t s) {
  check(static_cast<int64_t>(p.layers.size()) == cfg.n_layers, "GpuModelParams::upload: the params have " +
                                                                    std::to_string(p.layers.size()) +
                                                                    " layers, the config " +
                                                                    std::to_string(cfg.n_layers));
  for (const ParamSpec& spec : param_specs(cfg)) {
    const Tensor* t = p.slot(spec);
    const bool absent = t == nullptr || t->empty();
    check((spec.optional && absent) || (!absent && t->shape == spec.shape),
          "GpuModelParams::upload: tensor '" + spec.name + "' is missing or has the wrong shape");
  }
  GpuModelParams g;
  g.precision = prec;
  put(g.embed, p.embed, s);
  g.layers.resize(p.layers.size());
  for (size_t i = 0; i < p.layers.size(); ++i) {
    const ModelParams::Layer& a = p.layers[i];
    Layer& b = g.layers[i];
    put(b.attn_norm, a.attn_norm, s);
    put(b.wq, a.wq, s);
    put(b.wk, a.wk, s);
    put(b.wv, a.wv, s);
    put(b.wo, a.wo, s);
    put(b.mlp_norm, a.mlp_norm, s);
    b.moe = GpuMoeParams::upload(a.moe, cfg.layer_moe(static_cast<int>(i), false), prec, s);
  }
  put(g.final_norm, p.final_norm, s);
  put(g.lm_head, p.lm_head, s);
  g.refresh_bf16(s);
  return g;
}

GpuModelParams GpuModelParams::zeros(const ModelConfig& cfg, cudaStream_t s) {
  GpuModelParams g;
  const ModelParams shapes = ModelParams::zeros(cfg);
  g = upload(shapes, cfg, Precision::kF32, s);
  MOEPP_CUDA(cudaStreamSynchronize(s));  // the host zeros are freed on return
  return g;
}

void GpuModelParams::download(ModelParams& out, const ModelConfig& cfg, cudaStream_t s) const {
  check(static_cast<int64_t>(out.layers.size()) == cfg.n_layers && layers.size() == out.layers.size(),
        "GpuModelParams::download: the target is not shaped for this config");
  get(out.embed, embed, "embed", s);
  for (size_t i = 0; i < layers.size(); ++i) {
    const Layer& a = layers[i];
    ModelParams::Layer& b = out.layers[i];
    get(b.attn_norm, a.attn_norm, "input_layernorm", s);
    get(b.wq, a.wq, "q_proj", s);
    get(b.wk, a.wk, "k_proj", s);
    get(b.wv, a.wv, "v_proj", s);
    get(b.wo, a.wo, "o_proj", s);
    get(b.mlp_norm, a.mlp_norm, "post_attention_layernorm", s);
    a.moe.download(b.moe, cfg.layer_moe(static_cast<int>(i), false), s);  // waits
  }
  get(out.final_norm, final_norm, "norm", s);
  get(out.lm_head, lm_head, "lm_head", s);
  MOEPP_CUDA(cudaStreamSynchronize(s));
}

void GpuModelParams::refresh_bf16(cudaStream_t s) {
  if (precision != Precision::kBF16) return;
  for (Layer& l : layers) {
    bf16_copy(l.wq_b, l.wq, s);
    bf16_copy(l.wk_b, l.wk, s);
    bf16_copy(l.wv_b, l.wv, s);
    bf16_copy(l.wo_b, l.wo, s);
    l.moe.refresh_bf16(s);
  }
  bf16_copy(lm_head_b, lm_head, s);
}

void GpuModelParams::zero(cudaStream_t s) {
  zero_async(embed.get(), embed.size(), s);
  for (Layer& l : layers) {
    for (DeviceBuffer<float>* b : {&l.attn_norm, &l.wq, &l.wk, &l.wv, &l.wo, &l.mlp_norm}) zero_async(b->get(), b->size(), s);
    l.moe.zero(s);
  }
  zero_async(final_norm.get(), final_norm.size(), s);
  zero_async(lm_head.get(), lm_head.size(), s);
}

GpuModelParams::Span GpuModelParams::span(const ParamSpec& spec) {
  auto whole = [](DeviceBuffer<float>& b) { return Span{b.get(), static_cast<int64_t>(b.size())}; };
  if (spec.kind == ParamKind::kEmbed) return whole(embed);
  if (spec.kind == ParamKind::kFinalNorm) return whole(final_norm);
  if (spec.kind == ParamKind::kLmHead) return whole(lm_head);
  check(spec.layer >= 0 && spec.layer < static_cast<int64_t>(layers.size()),
        "GpuModelParams::span: no layer " + std::to_string(spec.layer));
  Layer& l = layers[spec.layer];
  switch (spec.kind) {
    case ParamKind::kAttnNorm: return whole(l.attn_norm);
    case ParamKind::kWq: return whole(l.wq);
    case ParamKind::kWk: return whole(l.wk);
    case ParamKind::kWv: return whole(l.wv);
    case ParamKind::kWo: return whole(l.wo);
    case ParamKind::kMlpNorm: return whole(l.mlp_norm);
    default: break;
  }
  GpuMoeParams& m = l.moe;
  int64_t each = 1;
  for (int64_t d : spec.moe.shape) each *= d;
  auto slice = [&](DeviceBuffer<float>& b) {
    const int64_t off = spec.moe.index * each;
    check(off + each <= static_cast<int64_t>(b.size()), "GpuModelParams::span: '" + spec.name + "' is outside its buffer");
    return Span{b.get() + off, each};
  };
  switch (spec.moe.kind) {
    case MoeParamKind::kWg: return whole(m.wg);
    case MoeParamKind::kWg0: return whole(m.wg0);
    case MoeParamKind::kWg2: return whole(m.wg2);
    case MoeParamKind::kGateMap: return m.gate_map.empty() ? Span{} : whole(m.gate_map);
    case MoeParamKind::kUp: return slice(m.up);
    case MoeParamKind::kDown: return slice(m.down);
    case MoeParamKind::kConstWg: return slice(m.const_wg);
    case MoeParamKind::kConstV: return slice(m.const_v);
  }
  return {};
}

}  // namespace moepp::gpu
