// GpuModel: the order of the steps of the decoder's forward and backward on the GPU (see gpu_model.h);
// the kernels live in gpu_embedding, gpu_rmsnorm, gpu_linear, gpu_rope, gpu_attention, gpu_lm_head_ce
// and the MoE++ layer's files.
#include "gpu/gpu_model.h"

#include <climits>
#include <string>
#include <utility>

#include "core/error.h"
#include "gpu/cuda_check.h"
#include "gpu/gpu_embedding.h"
#include "gpu/gpu_linear.h"
#include "gpu/gpu_rmsnorm.h"
#include "gpu/gpu_rope.h"
#include "model/batch_check.h"

namespace moepp::gpu {
namespace {

size_t sz(int64_t n) { return static_cast<size_t>(n); }

// y[0, n) += x[0, n) (cuBLAS saxpy on the handle's stream).
void add_into(cublasHandle_t h, float* y, const float* x, int64_t n) {
  check(n >= 0 && n <= INT_MAX, "GpuModel: " + std::to_string(n) + " elements exceed cuBLAS's int range");
  if (n == 0) return;
  const float one = 1.0f;
  MOEPP_CUBLAS(cublasSaxpy(h, static_cast<int>(n), &one, x, 1, y, 1));
}

void copy_device(float* dst, const float* src, int64_t n, cudaStream_t s) {
  if (n) MOEPP_CUDA(cudaMemcpyAsync(dst, src, sz(n) * sizeof(float), cudaMemcpyDeviceToDevice, s));
}

// The operand a product reads for fp32 activations x [n]: x itself, or its BF16 copy in buf.
const void* operand(const float* x, int64_t n, ElemType t, DeviceBuffer<__nv_bfloat16>& buf, cudaStream_t s) {
  if (t == ElemType::kF32) return x;
  buf.ensure(sz(n));
  convert_to_bf16(buf.get(), x, n, s);
  return buf.get();
}

}  // namespace

GpuModel::GpuModel(ModelConfig cfg, GpuModelOptions opt) : cfg_(std::move(cfg)), opt_(opt) {
  cfg_.validate("GpuModel");
  GpuLayerOptions lo{opt_.precision, opt_.gemm};
  for (int64_t i = 0; i < cfg_.n_layers; ++i) {
    infer_layers_.emplace_back(cfg_.layer_moe(static_cast<int>(i), false), lo);
    train_layers_.emplace_back(cfg_.layer_moe(static_cast<int>(i), true), lo);
  }
}

float GpuModel::forward(GpuModelState& st, const int32_t* tokens, const int32_t* targets, int64_t B, int64_t T,
                        const GpuModelParams& p, bool training, GpuContext& ctx) const {
  const int64_t V = cfg_.vocab, D = cfg_.hidden, L = cfg_.n_layers;
  const int64_t H = cfg_.n_heads, KVH = cfg_.n_kv_heads, hd = cfg_.head_dim, Q = H * hd, KV = KVH * hd;
  check_model_batch(cfg_, tokens, targets, B, T, "GpuModel::forward");
  check(B <= INT32_MAX / T, "GpuModel::forward: B*T beyond 2^31 tokens");
  check(static_cast<int64_t>(p.layers.size()) == L, "GpuModel::forward: the params have " +
                                                        std::to_string(p.layers.size()) + " layers, the config " +
                                                        std::to_string(L));
  check(opt_.precision == Precision::kF32 || p.precision == Precision::kBF16,
        "GpuModel::forward: BF16 products need weights uploaded with their BF16 copies (Precision::kBF16)");
  const int64_t N = B * T;
  for (int64_t l = 0; l < L; ++l) check_gpu_tokens(cfg_.layer_moe(static_cast<int>(l), training), N, "GpuModel::forward");
  cudaStream_t s = ctx.s();
  cublasHandle_t hb = ctx.blas.get();
  const ElemType et = opt_.precision == Precision::kF32 ? ElemType::kF32 : ElemType::kBF16;
  st.B = B, st.T = T, st.N = N, st.training = training;
  st.tokens.assign(tokens, tokens + N);
  if (targets) st.targets.assign(targets, targets + N);
  else st.targets.clear();
  st.n_targets = 0;
  for (int32_t t : st.targets) st.n_targets += t != -1;
  upload(st.d_tokens, st.tokens, s);
  upload(st.d_targets, st.targets, s);
  if (st.rope.T != T || st.rope.half != hd / 2 || st.rope.theta != cfg_.rope_theta || st.rope_cos.empty()) {
    st.rope.build(T, hd, cfg_.rope_theta);
    upload(st.rope_cos, st.rope.cos, s);
    upload(st.rope_sin, st.rope.sin, s);
  }
  st.layers.resize(sz(L));
  const GpuAttnShape as{B, T, H, KVH, hd};

  // h = embed[tokens]   [N, D]
  st.layers[0].h.ensure(sz(N * D));
  embedding_forward(st.layers[0].h.get(), st.d_tokens.get(), p.embed.get(), N, D, s);

  st.aux_loss_sum = 0.0f;
  st.ffn_experts_per_token.assign(sz(L), 0.0f);
  for (int64_t l = 0; l < L; ++l) {
    GpuModelState::Layer& a = st.layers[l];
    const GpuModelParams::Layer& w = p.layers[l];
    const bool bf = et == ElemType::kBF16;
    // Attention block: h_mid = h + attn(rmsnorm(h)) · wo^T
    a.xn1.ensure(sz(N * D));
    a.rstd1.ensure(sz(N));
    rmsnorm_forward(a.xn1.get(), a.rstd1.get(), a.h.get(), w.attn_norm.get(), N, D, cfg_.rms_eps, s);
    a.q.ensure(sz(N * Q));
    a.k.ensure(sz(N * KV));
    a.v.ensure(sz(N * KV));
    const void* xin = operand(a.xn1.get(), N * D, et, st.op_b, s);
    linear_forward(hb, a.q.get(), xin, bf ? static_cast<const void*>(w.wq_b.get()) : w.wq.get(), et, N, D, Q);
    linear_forward(hb, a.k.get(), xin, bf ? static_cast<const void*>(w.wk_b.get()) : w.wk.get(), et, N, D, KV);
    linear_forward(hb, a.v.get(), xin, bf ? static_cast<const void*>(w.wv_b.get()) : w.wv.get(), et, N, D, KV);
    rope_forward(a.q.get(), st.rope_cos.get(), st.rope_sin.get(), B, T, H, hd, s);
    rope_forward(a.k.get(), st.rope_cos.get(), st.rope_sin.get(), B, T, KVH, hd, s);
    a.att.ensure(sz(N * Q));
    a.lse.ensure(sz(N * H));
    attention_forward(a.att.get(), a.lse.get(), st.attn, a.q.get(), a.k.get(), a.v.get(), as, hb, s);
    a.h_mid.ensure(sz(N * D));
    copy_device(a.h_mid.get(), a.h.get(), N * D, s);
    linear_forward(hb, a.h_mid.get(), operand(a.att.get(), N * Q, et, st.op_b, s),
                   bf ? static_cast<const void*>(w.wo_b.get()) : w.wo.get(), et, N, Q, D, /*accumulate=*/true);
    // MoE++ block: h_out = h_mid + moe(rmsnorm(h_mid)), gating residual from block l-1.
    a.xn2.ensure(sz(N * D));
    a.rstd2.ensure(sz(N));
    rmsnorm_forward(a.xn2.get(), a.rstd2.get(), a.h_mid.get(), w.mlp_norm.get(), N, D, cfg_.rms_eps, s);
    const float* z_prev = l > 0 ? st.layers[l - 1].moe.z.get() : nullptr;
    a.y.ensure(sz(N * D));
    layer(l, training).forward(a.y.get(), a.moe, a.xn2.get(), z_prev, w.moe, N, ctx);
    DeviceBuffer<float>& h_out = l + 1 < L ? st.layers[l + 1].h : st.h_final;
    h_out.ensure(sz(N * D));
    copy_device(h_out.get(), a.h_mid.get(), N * D, s);
    add_into(hb, h_out.get(), a.y.get(), N * D);
    if (training) st.aux_loss_sum += a.moe.aux_loss;
    st.ffn_experts_per_token[l] = static_cast<float>(a.moe.ffn_rows()) / static_cast<float>(N);
  }

  // Head: xf = rmsnorm(h_final); logits = xf · lm_head^T; mean CE (fused with its gradient in training).
  st.xf.ensure(sz(N * D));
  st.rstd_f.ensure(sz(N));
  rmsnorm_forward(st.xf.get(), st.rstd_f.get(), st.h_final.get(), p.final_norm.get(), N, D, cfg_.rms_eps, s);
  st.ce_lse.ensure(sz(N));
  st.head_grad_ready = training && st.n_targets > 0;
  st.loss = 0.0f;
  if (st.n_targets > 0) {
    if (st.head_grad_ready) {
      st.dxf.ensure(sz(N * D));
      st.dlm_head.ensure(sz(V * D));
      zero_async(st.dlm_head.get(), sz(V * D), s);
    }
    const LmHeadOperands op{operand(st.xf.get(), N * D, et, st.op_b, s),
                            et == ElemType::kBF16 ? static_cast<const void*>(p.lm_head_b.get()) : p.lm_head.get(), et};
    st.loss = lm_head_ce_forward(st.ce_lse.get(), st.head_grad_ready ? st.dxf.get() : nullptr, st.dlm_head.get(),
                                 st.head, op, st.d_targets.get(), st.targets.data(), N, D, V, hb, s);
  }
  MOEPP_CUDA(cudaStreamSynchronize(s));
  return st.loss;
}

void GpuModel::backward(GpuModelParams& g, GpuModelState& st, const GpuModelParams& p, GpuContext& ctx) const {
  const int64_t V = cfg_.vocab, D = cfg_.hidden, L = cfg_.n_layers, E = cfg_.moe.n_experts;
  const int64_t H = cfg_.n_heads, KVH = cfg_.n_kv_heads, hd = cfg_.head_dim, Q = H * hd, KV = KVH * hd;
  const int64_t B = st.B, T = st.T, N = st.N;
  check(N > 0 && static_cast<int64_t>(st.layers.size()) == L, "GpuModel::backward: no forward pass in the state");
  check(st.training, "GpuModel::backward: the last forward pass was not a training pass");
  check(static_cast<int64_t>(g.layers.size()) == L, "GpuModel::backward: the gradients have the wrong number of layers");
  cudaStream_t s = ctx.s();
  cublasHandle_t hb = ctx.blas.get();
  const ElemType et = opt_.precision == Precision::kF32 ? ElemType::kF32 : ElemType::kBF16;
  const bool bf = et == ElemType::kBF16;
  const GpuAttnShape as{B, T, H, KVH, hd};
  for (DeviceBuffer<float>* b : {&st.dh, &st.dxn}) b->ensure(sz(N * D));
  st.datt.ensure(sz(N * Q));
  st.dq.ensure(sz(N * Q));
  st.dk.ensure(sz(N * KV));
  st.dv.ensure(sz(N * KV));
  st.dz.ensure(sz(N * E));
  st.dz_prev.ensure(sz(N * E));
  st.norm_scratch.ensure(sz(rmsnorm_backward_scratch(D)));

  // Head: lm_head's gradient from the fused pass (dxf = 0 without targets), then the final norm into dh.
  if (st.head_grad_ready) {
    add_into(hb, g.lm_head.get(), st.dlm_head.get(), V * D);
  } else {
    st.dxf.ensure(sz(N * D));
    zero_async(st.dxf.get(), sz(N * D), s);
  }
  zero_async(st.dh.get(), sz(N * D), s);
  rmsnorm_backward(st.dh.get(), g.final_norm.get(), st.norm_scratch.get(), st.dxf.get(), st.h_final.get(),
                   p.final_norm.get(), st.rstd_f.get(), N, D, s);

  // Blocks, last to first: st.dh holds d(residual stream after block l); st.dz d(router logits of l).
  bool have_dz = false;
  for (int64_t l = L - 1; l >= 0; --l) {
    GpuModelState::Layer& a = st.layers[l];
    const GpuModelParams::Layer& w = p.layers[l];
    GpuModelParams::Layer& gl = g.layers[l];
    const GpuMoeLayer& moe = layer(l, true);
    // h_out = h_mid + y: dy = dh; the MoE++ layer gives dxn2 and (gating residual) d z_prev.
    const bool res = moe.config().uses_residual();
    moe.backward(st.dxn.get(), res ? st.dz_prev.get() : nullptr, gl.moe, st.moe_scratch, st.dh.get(),
                 have_dz ? st.dz.get() : nullptr, a.moe, w.moe, ctx);
    // dh_mid = dh + rmsnorm_backward(dxn2)
    rmsnorm_backward(st.dh.get(), gl.mlp_norm.get(), st.norm_scratch.get(), st.dxn.get(), a.h_mid.get(),
                     w.mlp_norm.get(), a.rstd2.get(), N, D, s);
    // h_mid = h + att · wo^T: datt = dh_mid · wo, dwo += dh_mid^T · att
    {
      const void* dy = operand(st.dh.get(), N * D, et, st.op_a, s);
      linear_backward_input(hb, st.datt.get(), dy, bf ? static_cast<const void*>(w.wo_b.get()) : w.wo.get(), et, N,
                            Q, D);
      linear_backward_weight(hb, gl.wo.get(), dy, operand(a.att.get(), N * Q, et, st.op_b, s), et, N, Q, D);
    }
    attention_backward(st.dq.get(), st.dk.get(), st.dv.get(), st.attn, st.datt.get(), a.q.get(), a.k.get(), a.v.get(),
                       a.lse.get(), as, hb, s);
    rope_backward(st.dq.get(), st.rope_cos.get(), st.rope_sin.get(), B, T, H, hd, s);
    rope_backward(st.dk.get(), st.rope_cos.get(), st.rope_sin.get(), B, T, KVH, hd, s);
    // dxn1 = dq · wq + dk · wk + dv · wv, and the projections' weight gradients.
    {
      const void* xin = operand(a.xn1.get(), N * D, et, st.op_b, s);
      struct Proj {
        const float* d;
        int64_t O;
        const float* w32;
        const __nv_bfloat16* w16;
        float* gw;
      };
      const Proj projs[3] = {{st.dq.get(), Q, w.wq.get(), w.wq_b.get(), gl.wq.get()},
                             {st.dk.get(), KV, w.wk.get(), w.wk_b.get(), gl.wk.get()},
                             {st.dv.get(), KV, w.wv.get(), w.wv_b.get(), gl.wv.get()}};
      for (int i = 0; i < 3; ++i) {
        const Proj& pr = projs[i];
        const void* dy = operand(pr.d, N * pr.O, et, st.op_a, s);
        linear_backward_input(hb, st.dxn.get(), dy, bf ? static_cast<const void*>(pr.w16) : pr.w32, et, N, D, pr.O,
                              /*accumulate=*/i > 0);
        linear_backward_weight(hb, pr.gw, dy, xin, et, N, D, pr.O);
      }
    }
    // dh = dh_mid + rmsnorm_backward(dxn1)
    rmsnorm_backward(st.dh.get(), gl.attn_norm.get(), st.norm_scratch.get(), st.dxn.get(), a.h.get(), w.attn_norm.get(),
                     a.rstd1.get(), N, D, s);
    have_dz = res;
    if (res) std::swap(st.dz, st.dz_prev);
  }
  // The embedding's scatter-add, grouped by token id on the host (gpu_embedding.h).
  const EmbeddingGradPlan plan = embedding_grad_plan(st.tokens.data(), N, V);
  upload(st.d_embed_plan, plan.packed(), s);
  embedding_backward(g.embed.get(), st.dh.get(), st.d_embed_plan.get(), N, static_cast<int64_t>(plan.token.size()), D,
                     s);
  MOEPP_CUDA(cudaStreamSynchronize(s));  // the plan's host memory is freed on return
}

}  // namespace moepp::gpu
