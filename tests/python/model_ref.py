"""Independent PyTorch reference of the whole MoE++ decoder, written from the spec (§4, §5) and
docs/layer.md, not from src/. The MoE++ layer itself is the colleague's reference (moepp_ref.py).

Model (Hugging Face LLaMA layout): h = embed[tokens]; per block
    h = h + o_proj(attn(rope(q_proj(n1)), rope(k_proj(n1)), v_proj(n1))),  n1 = rmsnorm(h)
    y, z = moe(n2, z_prev),  n2 = rmsnorm(h);  h = h + y;  z_prev = z (gating residual, next block)
then logits = lm_head(rmsnorm(h)), loss = mean CE over targets != -1 (+ sum of the blocks' aux losses in
training mode). RMSNorm: x * rsqrt(mean(x^2) + eps) * w. RoPE: HF rotate_half, inv_freq and angles in
fp32 as HF computes them. Attention: causal, scale 1/sqrt(hd), query head h reads kv head h // (H/KVH).
The B*T tokens of a batch are the MoE++ layer's T (gating residual per position, balance statistics and
capacity over the whole batch).

Public API
  resolve(config)                 -> dict of model sizes (V, D, L, H, KVH, hd, eps, theta)
  layer_cfg(config, i, training)  -> moepp_ref.Cfg of block i
  param_shapes(config, layer0_gate_map=True) -> {full checkpoint name: shape}
  make_weights(config, seed, layer0_gate_map=True) -> {name: np.float32}, scales giving O(1) activations
  forward(config, W, tokens, targets, B, training) -> dict (torch): logits [B*T, V], router_logits [L],
                                     loss, aux_loss, layer_outs (the moepp_ref outputs per block)
  loss_and_grads(config, W_np, tokens, targets, B, training, dtype) -> (outputs np, grads np by
                                     `grad.<name>`, min selection margin over blocks)
"""
import math

import numpy as np
import torch

import moepp_ref as R


def resolve(config):
    D = int(config["hidden_size"])
    H = int(config["num_attention_heads"])
    KVH = int(config.get("num_key_value_heads", H))
    assert D % H == 0 and H % KVH == 0
    return dict(V=int(config["vocab_size"]), D=D, L=int(config["num_hidden_layers"]), H=H, KVH=KVH, hd=D // H,
                eps=float(config.get("rms_norm_eps", 1e-6)), theta=float(config.get("rope_theta", 10000.0)))


def layer_cfg(config, i, training):
    c = dict(config)
    c["layer_index"] = i
    c["training"] = training
    return R.resolve_config(c)


def param_shapes(config, layer0_gate_map=True):
    m = resolve(config)
    D, V, Q, KV = m["D"], m["V"], m["H"] * m["hd"], m["KVH"] * m["hd"]
    shapes = {"model.embed_tokens.weight": (V, D)}
    for i in range(m["L"]):
        b = f"model.layers.{i}."
        shapes[b + "input_layernorm.weight"] = (D,)
        shapes[b + "self_attn.q_proj.weight"] = (Q, D)
        shapes[b + "self_attn.k_proj.weight"] = (KV, D)
        shapes[b + "self_attn.v_proj.weight"] = (KV, D)
        shapes[b + "self_attn.o_proj.weight"] = (D, Q)
        shapes[b + "post_attention_layernorm.weight"] = (D,)
        c = layer_cfg(config, i, False)
        for n, s in R.param_shapes(c, include_gate_map=layer0_gate_map if i == 0 else None).items():
            shapes[b + "mlp.moe." + n] = s
    shapes["model.norm.weight"] = (D,)
    shapes["lm_head.weight"] = (V, D)
    return shapes


def make_weights(config, seed, layer0_gate_map=True, router_scale=1.0):
    m = resolve(config)
    rng = np.random.default_rng(seed)
    D = m["D"]
    W = {}
    for i in range(m["L"]):
        c = layer_cfg(config, i, False)
        for n, a in R.make_weights(c, seed * 100 + i, include_gate_map=layer0_gate_map if i == 0 else None,
                                   router_scale=router_scale).items():
            W[f"model.layers.{i}.mlp.moe.{n}"] = a
    out = {}
    for name, shape in param_shapes(config, layer0_gate_map).items():
        if name in W:
            out[name] = W[name]
            continue
        if name.endswith("layernorm.weight") or name == "model.norm.weight":
            a = 1.0 + 0.2 * rng.standard_normal(shape)
        elif name == "model.embed_tokens.weight":
            a = rng.standard_normal(shape)
        elif name.endswith("o_proj.weight"):
            a = rng.standard_normal(shape) * (0.7 / math.sqrt(shape[1]))
        else:  # q, k, v projections, lm_head
            a = rng.standard_normal(shape) * (1.0 / math.sqrt(D))
        out[name] = a.astype(np.float32)
    return out


def rmsnorm(x, w, eps):
    var = x.pow(2).mean(-1, keepdim=True)
    return w * (x * torch.rsqrt(var + eps))


def rope_cos_sin(T, hd, theta, dtype):
    # As Hugging Face: fp32 inverse frequencies and fp32 angles, then cos/sin.
    inv_freq = 1.0 / (theta ** (torch.arange(0, hd, 2, dtype=torch.int64).float() / hd))
    freqs = torch.outer(torch.arange(T, dtype=torch.int64).float(), inv_freq)
    emb = torch.cat((freqs, freqs), dim=-1)
    return emb.cos().to(dtype), emb.sin().to(dtype)


def rotate_half(x):
    h = x.shape[-1] // 2
    return torch.cat((-x[..., h:], x[..., :h]), dim=-1)


def attention(q, k, v, H, KVH):
    """q [B, T, H, hd], k, v [B, T, KVH, hd] -> [B, T, H*hd] (naive, full T x T)."""
    B, T, _, hd = q.shape
    G = H // KVH
    k = k.repeat_interleave(G, dim=2)
    v = v.repeat_interleave(G, dim=2)
    q, k, v = (t.transpose(1, 2) for t in (q, k, v))  # [B, H, T, hd]
    s = (q @ k.transpose(-1, -2)) / math.sqrt(hd)
    mask = torch.ones(T, T, dtype=torch.bool).tril()
    s = s.masked_fill(~mask, float("-inf"))
    o = torch.softmax(s, dim=-1) @ v  # [B, H, T, hd]
    return o.transpose(1, 2).reshape(B, T, H * hd)


def round_to_bf16(t):
    """t rounded to bfloat16 (nearest, ties to even) through fp32, returned in t's dtype: what moepp's BF16
    KV cache stores of an fp32 key or value."""
    bits = t.to(torch.float32).contiguous().view(torch.int32)
    bits = (bits + (0x7FFF + ((bits >> 16) & 1))) & -65536
    return bits.view(torch.float32).to(t.dtype)


def forward(config, W, tokens, targets, B, training, kv_bf16=False):
    """W: full name -> torch tensor (float64 or float32). tokens, targets: int arrays [B*T]. kv_bf16: the
    keys (after RoPE) and values rounded to bfloat16 before attention, as moepp's BF16 KV cache keeps them."""
    m = resolve(config)
    L, H, KVH, hd, eps = m["L"], m["H"], m["KVH"], m["hd"], m["eps"]
    N = len(tokens)
    T = N // B
    dtype = W["model.embed_tokens.weight"].dtype
    cos, sin = rope_cos_sin(T, hd, m["theta"], dtype)
    h = W["model.embed_tokens.weight"][torch.as_tensor(np.asarray(tokens), dtype=torch.int64)]  # [N, D]
    z_prev = None
    router_logits, layer_outs = [], []
    aux = torch.zeros((), dtype=dtype)
    for i in range(L):
        b = f"model.layers.{i}."
        n1 = rmsnorm(h, W[b + "input_layernorm.weight"], eps)
        q = (n1 @ W[b + "self_attn.q_proj.weight"].t()).reshape(B, T, H, hd)
        k = (n1 @ W[b + "self_attn.k_proj.weight"].t()).reshape(B, T, KVH, hd)
        v = (n1 @ W[b + "self_attn.v_proj.weight"].t()).reshape(B, T, KVH, hd)
        c4, s4 = cos[None, :, None, :], sin[None, :, None, :]
        q = q * c4 + rotate_half(q) * s4
        k = k * c4 + rotate_half(k) * s4
        if kv_bf16:
            k, v = round_to_bf16(k), round_to_bf16(v)
        a = attention(q, k, v, H, KVH).reshape(N, H * hd)
        h = h + a @ W[b + "self_attn.o_proj.weight"].t()
        n2 = rmsnorm(h, W[b + "post_attention_layernorm.weight"], eps)
        c = layer_cfg(config, i, training)
        Wl = {n[len(b + "mlp.moe."):]: t for n, t in W.items() if n.startswith(b + "mlp.moe.")}
        out = R.forward(c, Wl, n2, z_prev if c.uses_residual else None)
        h = h + out["y"]
        z_prev = out["router_logits"]
        router_logits.append(z_prev)
        layer_outs.append((c, out))
        if training:
            aux = aux + out["aux_loss"]
    logits = rmsnorm(h, W["model.norm.weight"], eps) @ W["lm_head.weight"].t()
    loss = torch.zeros((), dtype=dtype)
    if targets is not None:
        tg = torch.as_tensor(np.asarray(targets), dtype=torch.int64)
        if bool((tg != -1).any()):
            loss = torch.nn.functional.cross_entropy(logits, tg, ignore_index=-1, reduction="mean")
    return dict(logits=logits, router_logits=router_logits, loss=loss, aux_loss=aux, layer_outs=layer_outs)


def selection_margin(layer_outs):
    """Smallest top-k gap over all blocks (a flip below it could change the selected experts), and
    the smallest std of the router logits (logits norm)."""
    margin, min_std = float("inf"), float("inf")
    for c, out in layer_outs:
        margin = min(margin, R.selection_margin(c, out))
        if c.router != "relu" and c.logits_norm:
            min_std = min(min_std, float(torch.std(out["router_logits"].detach(), dim=1, unbiased=True).min()))
    return margin, min_std


def loss_and_grads(config, W_np, tokens, targets, B, training, dtype=torch.float64):
    """Outputs (numpy) named like `moepp dump`, gradients `grad.<name>` of CE + sum aux (autograd),
    and (margin, min_std) of the routing."""
    W = {k: torch.tensor(np.asarray(v), dtype=dtype, requires_grad=True) for k, v in W_np.items()}
    f = forward(config, W, tokens, targets, B, training)
    res = {"logits": f["logits"].detach().numpy()}
    for i, z in enumerate(f["router_logits"]):
        res[f"router_logits.{i}"] = z.detach().numpy()
    grads = {}
    if targets is not None:
        res["loss"] = f["loss"].detach().reshape(1).numpy()
        res["aux_loss"] = f["aux_loss"].detach().reshape(1).numpy()
        total = f["loss"] + f["aux_loss"]
        names = list(W.keys())
        gs = torch.autograd.grad(total, [W[n] for n in names], allow_unused=True)
        for n, g in zip(names, gs):
            grads["grad." + n] = (torch.zeros_like(W[n]) if g is None else g).detach().numpy()
    return res, grads, selection_margin(f["layer_outs"])
