// Model: the order of the steps of the decoder's forward and backward (the kernels live in embedding,
// rmsnorm, linear, rope, attention, lm_head_ce and src/moe).
#include "model/model.h"

#include <cmath>
#include <cstring>
#include <optional>

#include "core/error.h"
#include "core/profile.h"
#include "model/batch_check.h"
#include "model/embedding.h"
#include "model/linear.h"
#include "model/rmsnorm.h"
#include "moe/expert_parallel.h"

namespace moepp {

Model::Model(ModelConfig cfg) : cfg_(std::move(cfg)) {
  cfg_.validate("Model");
  for (int64_t i = 0; i < cfg_.n_layers; ++i) {
    infer_layers_.emplace_back(cfg_.layer_moe(static_cast<int>(i), false));
    train_layers_.emplace_back(cfg_.layer_moe(static_cast<int>(i), true));
  }
}

void Model::set_relu_l1_coef(float lambda) {
  check(std::isfinite(lambda) && lambda >= 0.0f,
        "Model: moe_relu_l1_coef must be finite and >= 0, got " + std::to_string(lambda));
  cfg_.moe.relu_l1_coef = lambda;
  for (int64_t i = 0; i < cfg_.n_layers; ++i) {
    infer_layers_[i] = MoeLayer(cfg_.layer_moe(static_cast<int>(i), false));
    train_layers_[i] = MoeLayer(cfg_.layer_moe(static_cast<int>(i), true));
  }
}

void Model::check_params(const ModelParams& p, const std::string& source) const {
  check(static_cast<int64_t>(p.layers.size()) == cfg_.n_layers,
        source + ": expected " + std::to_string(cfg_.n_layers) + " layers, got " + std::to_string(p.layers.size()));
  for (const ParamSpec& s : param_specs(cfg_)) {
    const Tensor* t = p.slot(s);
    check(t != nullptr && !t->empty(), source + ": expected tensor '" + s.name + "'");
    check(t->shape == s.shape, source + ": tensor '" + s.name + "' has shape " + shape_str(t->shape) + ", expected " +
                                   shape_str(s.shape));
  }
  for (int64_t l = 0; l < cfg_.n_layers; ++l)
    layer(l, false).check_params(p.layers[l].moe, source + ": layer " + std::to_string(l));
}

float Model::forward(ModelState& st, const int32_t* tokens, const int32_t* targets, int64_t B, int64_t T,
                     const ModelParams& p, bool training) const {
  const int64_t V = cfg_.vocab, D = cfg_.hidden, L = cfg_.n_layers;
  const int64_t H = cfg_.n_heads, KVH = cfg_.n_kv_heads, hd = cfg_.head_dim, Q = H * hd, KV = KVH * hd;
  check_model_batch(cfg_, tokens, targets, B, T, "Model::forward");
  check(static_cast<int64_t>(p.layers.size()) == L, "Model::forward: the params have " +
                                                        std::to_string(p.layers.size()) + " layers, the config " +
                                                        std::to_string(L));
  const int64_t N = B * T;
  st.B = B;
  st.T = T;
  st.N = N;
  st.training = training;
  st.tokens.assign(tokens, tokens + N);
  if (targets) st.targets.assign(targets, targets + N);
  else st.targets.clear();
  st.n_targets = 0;
  for (int32_t t : st.targets) st.n_targets += t != -1;
  st.batch_targets = 0;
  if (par_.batch) {  // the CE is the mean over the whole batch's targets
    double n = static_cast<double>(st.n_targets);
    par_.batch->allreduce_sum(&n, 1);
    st.batch_targets = static_cast<int64_t>(n);
  }
  st.layers.resize(L);
  st.rope.build(T, hd, cfg_.rope_theta);
  const AttnShape as{B, T, H, KVH, hd};

  // h = embed[tokens]   [N, D]
  ensure_shape(st.layers[0].h, {N, D});
  embedding_forward(st.layers[0].h.ptr(), tokens, p.embed.ptr(), N, D);

  st.aux_loss_sum = 0.0f;
  st.ffn_experts_per_token.assign(L, 0.0f);
  for (int64_t l = 0; l < L; ++l) {
    ModelState::Layer& a = st.layers[l];
    const ModelParams::Layer& w = p.layers[l];
    // Attention block: h_mid = h + attn(rmsnorm(h)) · wo^T
    {
      ProfileScope ps("fwd.norm");
      ensure_shape(a.xn1, {N, D});
      a.rstd1.resize(N);
      rmsnorm_forward(a.xn1.ptr(), a.rstd1.data(), a.h.ptr(), w.attn_norm.ptr(), N, D, cfg_.rms_eps);
    }
    {
      ProfileScope ps("fwd.qkv");
      ensure_shape(a.q, {N, Q});
      ensure_shape(a.k, {N, KV});
      ensure_shape(a.v, {N, KV});
      linear_forward(a.q.ptr(), a.xn1.ptr(), w.wq.ptr(), N, D, Q);
      linear_forward(a.k.ptr(), a.xn1.ptr(), w.wk.ptr(), N, D, KV);
      linear_forward(a.v.ptr(), a.xn1.ptr(), w.wv.ptr(), N, D, KV);
    }
    {
      ProfileScope ps("fwd.rope");
      rope_forward(a.q.ptr(), st.rope, B, T, H, hd);
      rope_forward(a.k.ptr(), st.rope, B, T, KVH, hd);
    }
    {
      ProfileScope ps("fwd.attention");
      ensure_shape(a.att, {N, Q});
      a.lse.resize(N * H);
      attention_forward(a.att.ptr(), a.lse.data(), a.q.ptr(), a.k.ptr(), a.v.ptr(), as, attn_blocks);
    }
    {
      ProfileScope ps("fwd.wo");
      a.h_mid = a.h;
      linear_forward(a.h_mid.ptr(), a.att.ptr(), w.wo.ptr(), N, Q, D, /*accumulate=*/true);
    }
    // MoE++ block: h_out = h_mid + moe(rmsnorm(h_mid)), gating residual from block l-1.
    {
      ProfileScope ps("fwd.norm");
      ensure_shape(a.xn2, {N, D});
      a.rstd2.resize(N);
      rmsnorm_forward(a.xn2.ptr(), a.rstd2.data(), a.h_mid.ptr(), w.mlp_norm.ptr(), N, D, cfg_.rms_eps);
    }
    const Tensor* z_prev = l > 0 ? &st.layers[l - 1].z : nullptr;
    std::optional<ExpertParallelFfn> ep;
    if (par_.experts) ep.emplace(*par_.experts, w.moe, nullptr);
    layer(l, training).forward(a.y, a.z, a.moe, a.xn2, z_prev, w.moe, ep ? &*ep : nullptr, par_.batch);
    {
      ProfileScope ps("fwd.residual");
      Tensor& h_out = l + 1 < L ? st.layers[l + 1].h : st.h_final;
      ensure_shape(h_out, {N, D});
      const float* hm = a.h_mid.ptr();
      const float* y = a.y.ptr();
      float* ho = h_out.ptr();
#pragma omp parallel for schedule(static)
      for (int64_t i = 0; i < N * D; ++i) ho[i] = hm[i] + y[i];
    }
    if (training) st.aux_loss_sum += a.moe.aux_loss;
    st.ffn_experts_per_token[l] = static_cast<float>(a.moe.ffn_rows()) / static_cast<float>(N);
  }

  // Head: xf = rmsnorm(h_final); logits = xf · lm_head^T; mean CE.
  ProfileScope ps_head("fwd.head");
  ensure_shape(st.xf, {N, D});
  st.rstd_f.resize(N);
  rmsnorm_forward(st.xf.ptr(), st.rstd_f.data(), st.h_final.ptr(), p.final_norm.ptr(), N, D, cfg_.rms_eps);
  if (st.keep_logits) ensure_shape(st.logits, {N, V});
  else st.logits = Tensor();
  st.ce_lse.resize(N);
  st.head_grad_ready = training && st.n_targets > 0;
  if (st.head_grad_ready) {
    ensure_shape(st.dxf, {N, D});
    ensure_shape(st.dlm_head, {V, D});
    st.dlm_head.zero();
  }
  st.loss = lm_head_ce_forward(st.keep_logits ? st.logits.ptr() : nullptr, st.ce_lse.data(),
                               st.head_grad_ready ? st.dxf.ptr() : nullptr,
                               st.head_grad_ready ? st.dlm_head.ptr() : nullptr, st.head_scratch, st.xf.ptr(),
                               p.lm_head.ptr(), targets, N, D, V, st.batch_targets);
  return st.loss;
}

void Model::backward(ModelParams& g, ModelState& st, const ModelParams& p) const {
  const int64_t V = cfg_.vocab, D = cfg_.hidden, L = cfg_.n_layers;
  const int64_t H = cfg_.n_heads, KVH = cfg_.n_kv_heads, hd = cfg_.head_dim, Q = H * hd, KV = KVH * hd;
  const int64_t B = st.B, T = st.T, N = st.N;
  check(N > 0 && static_cast<int64_t>(st.layers.size()) == L, "Model::backward: no forward pass in the state");
  check(static_cast<int64_t>(g.layers.size()) == L, "Model::backward: the gradients have the wrong number of layers");
  const AttnShape as{B, T, H, KVH, hd};

  // Head: dxf [N, D] (and lm_head's gradient), then the final norm into dh.
  const int32_t* targets = st.targets.empty() ? nullptr : st.targets.data();
  {
  ProfileScope ps("bwd.head");
  if (st.head_grad_ready) {
    float* gw = g.lm_head.ptr();
    const float* dw = st.dlm_head.ptr();
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < V * D; ++i) gw[i] += dw[i];
  } else {
    ensure_shape(st.dxf, {N, D});
    lm_head_ce_backward(st.dxf.ptr(), g.lm_head.ptr(), st.head_scratch, st.xf.ptr(), p.lm_head.ptr(), targets,
                        st.ce_lse.data(), N, D, V, st.batch_targets);
  }
  st.dh = Tensor({N, D});
  rmsnorm_backward(st.dh.ptr(), g.final_norm.ptr(), st.dxf.ptr(), st.h_final.ptr(), p.final_norm.ptr(),
                   st.rstd_f.data(), N, D);
  }

  // Blocks, last to first. st.dh holds d(residual stream after block l); st.dz d(router logits of l).
  bool have_dz = false;
  for (int64_t l = L - 1; l >= 0; --l) {
    ModelState::Layer& a = st.layers[l];
    const ModelParams::Layer& w = p.layers[l];
    ModelParams::Layer& gl = g.layers[l];
    const MoeLayer& moe = layer(l, st.training);
    // h_out = h_mid + y: dy = dh; the MoE++ layer gives dxn2 and (gating residual) d z_prev.
    const bool res = moe.config().uses_residual();
    std::optional<ExpertParallelFfn> ep;
    if (par_.experts) ep.emplace(*par_.experts, w.moe, &gl.moe);
    moe.backward(st.dxn, res ? &st.dz_prev : nullptr, gl.moe, st.moe_scratch, st.dh, have_dz ? &st.dz : nullptr,
                 a.moe, w.moe, ep ? &*ep : nullptr);
    {
      ProfileScope ps("bwd.norm");
      // dh_mid = dh + rmsnorm_backward(dxn2)
      rmsnorm_backward(st.dh.ptr(), gl.mlp_norm.ptr(), st.dxn.ptr(), a.h_mid.ptr(), w.mlp_norm.ptr(), a.rstd2.data(),
                       N, D);
    }
    {
      ProfileScope ps("bwd.wo");
      // h_mid = h + att · wo^T: datt = dh_mid · wo, dwo += dh_mid^T · att
      ensure_shape(st.datt, {N, Q});
      linear_backward(st.datt.ptr(), gl.wo.ptr(), st.dh.ptr(), a.att.ptr(), w.wo.ptr(), N, Q, D);
    }
    {
      ProfileScope ps("bwd.attention");
      ensure_shape(st.dq, {N, Q});
      ensure_shape(st.dk, {N, KV});
      ensure_shape(st.dv, {N, KV});
      attention_backward(st.dq.ptr(), st.dk.ptr(), st.dv.ptr(), st.datt.ptr(), a.q.ptr(), a.k.ptr(), a.v.ptr(),
                         a.att.ptr(), a.lse.data(), as, attn_blocks, attn_backward_mode);
    }
    {
      ProfileScope ps("bwd.rope");
      rope_backward(st.dq.ptr(), st.rope, B, T, H, hd);
      rope_backward(st.dk.ptr(), st.rope, B, T, KVH, hd);
    }
    {
      ProfileScope ps("bwd.qkv");
      // dxn1 = dq · wq + dk · wk + dv · wv (and the projections' weight gradients)
      ensure_shape(st.dxn, {N, D});
      linear_backward(st.dxn.ptr(), gl.wq.ptr(), st.dq.ptr(), a.xn1.ptr(), w.wq.ptr(), N, D, Q);
      linear_backward(st.dxn.ptr(), gl.wk.ptr(), st.dk.ptr(), a.xn1.ptr(), w.wk.ptr(), N, D, KV, true);
      linear_backward(st.dxn.ptr(), gl.wv.ptr(), st.dv.ptr(), a.xn1.ptr(), w.wv.ptr(), N, D, KV, true);
    }
    {
      ProfileScope ps("bwd.norm");
      // dh = dh_mid + rmsnorm_backward(dxn1)
      rmsnorm_backward(st.dh.ptr(), gl.attn_norm.ptr(), st.dxn.ptr(), a.h.ptr(), w.attn_norm.ptr(), a.rstd1.data(), N,
                       D);
    }
    have_dz = res;
    if (res) std::swap(st.dz, st.dz_prev);
  }
  ProfileScope ps("bwd.embed");
  embedding_backward(g.embed.ptr(), st.dh.ptr(), st.tokens.data(), N, D);
}

}  // namespace moepp
