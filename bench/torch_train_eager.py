#!/usr/bin/env python3
"""PyTorch eager baseline for `moepp bench train --torch`: training steps of the same MoE++ decoder (a
Hugging Face style config.json, e.g. the one `moepp bench train` writes) on random tokens.

Model: embedding -> L pre-norm LLaMA blocks (RMSNorm; q/k/v/o projections without bias, RoPE with
rotate_half, causal softmax attention by matmul + mask since torch 1.13 has no
scaled_dot_product_attention, grouped KV heads; RMSNorm; MoE++ layer) -> RMSNorm -> lm_head, mean CE plus
the blocks' balance losses. The MoE++ layer is written the way the authors' released code computes it:
router logits x . Wg^T (+ z_prev . Wmap^T, the gating residual, from block 1 on), divided by their
unbiased std, softmax over all E experts, top-k, the zero experts' weights forced to 0 and the rest
renormalised; then a Python loop over ALL experts (FFN, constant, copy, zero), each gathering its tokens
with torch.where on the top-k ids, scaling its output by the gate and index_add_ing it into y. Balance
loss: beta * sum_e eta_e * f_e * P_e (eta = tau for zero-computation experts, f = selections / tokens).
Expert order as in docs/layer.md: FFN, constant, copy, zero (last).

Step: zero_grad, forward, backward, clip_grad_norm_(clip), AdamW (weight decay only on matrices, as the
C++ optimiser). For each thread setting (torch.set_num_threads x OpenBLAS threads, from --threads) a fresh
model is built from the same seed and the median step time over --steps (after --warmup) is taken; the
best setting is reported. Prints one JSON line.

Run with Debian's interpreter: /usr/bin/python3 bench/torch_train_eager.py --model config.json
"""

import argparse
import ctypes
import json
import math
import statistics
import sys
import time

import torch
import torch.nn.functional as F


class RMSNorm(torch.nn.Module):
    def __init__(self, d, eps):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.ones(d))
        self.eps = eps

    def forward(self, x):
        return self.weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps))


def rotate_half(x):
    h = x.shape[-1] // 2
    return torch.cat((-x[..., h:], x[..., :h]), dim=-1)


class Attention(torch.nn.Module):
    def __init__(self, d, h, kvh, hd):
        super().__init__()
        self.h, self.kvh, self.hd = h, kvh, hd
        self.q_proj = torch.nn.Linear(d, h * hd, bias=False)
        self.k_proj = torch.nn.Linear(d, kvh * hd, bias=False)
        self.v_proj = torch.nn.Linear(d, kvh * hd, bias=False)
        self.o_proj = torch.nn.Linear(h * hd, d, bias=False)

    def forward(self, x, cos, sin, mask):
        B, T, _ = x.shape
        q = self.q_proj(x).view(B, T, self.h, self.hd).transpose(1, 2)  # [B, H, T, hd]
        k = self.k_proj(x).view(B, T, self.kvh, self.hd).transpose(1, 2)
        v = self.v_proj(x).view(B, T, self.kvh, self.hd).transpose(1, 2)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        if self.kvh != self.h:
            k = k.repeat_interleave(self.h // self.kvh, dim=1)
            v = v.repeat_interleave(self.h // self.kvh, dim=1)
        s = (q @ k.transpose(-1, -2)) * (1.0 / math.sqrt(self.hd))
        s = s.masked_fill(mask, float("-inf"))
        o = torch.softmax(s, dim=-1) @ v
        return self.o_proj(o.transpose(1, 2).reshape(B, T, self.h * self.hd))


class FFNExpert(torch.nn.Module):
    def __init__(self, d, i):
        super().__init__()
        self.up_proj = torch.nn.Linear(d, 2 * i, bias=False)
        self.down_proj = torch.nn.Linear(i, d, bias=False)

    def forward(self, x):
        g, u = self.up_proj(x).chunk(2, dim=-1)
        return self.down_proj(F.silu(g) * u)


class ConstantExpert(torch.nn.Module):
    def __init__(self, d):
        super().__init__()
        self.wg = torch.nn.Linear(d, 2, bias=False)
        self.constant = torch.nn.Parameter(torch.empty(d))

    def forward(self, x):
        a = torch.softmax(self.wg(x), dim=-1)
        return a[:, 0:1] * x + a[:, 1:2] * self.constant


class CopyExpert(torch.nn.Module):
    def forward(self, x):
        return x


class ZeroExpert(torch.nn.Module):
    def forward(self, x):
        return torch.zeros_like(x)


class MoEPPLayer(torch.nn.Module):
    def __init__(self, c, layer_index):
        super().__init__()
        d, i = c["D"], c["I"]
        self.E, self.K, self.n_ffn, self.n_zero = c["E"], c["K"], c["n_ffn"], c["n_zero"]
        self.first_zero = self.E - self.n_zero
        self.logits_norm, self.gate_norm_std = c["logits_norm"], c["gate_norm_std"]
        self.no_mul_topk, self.beta = c["no_mul_topk"], c["beta"]
        self.wg = torch.nn.Linear(d, self.E, bias=False)
        self.gate_map = None
        if c["gating_residual"] and layer_index > 0:
            self.gate_map = torch.nn.Linear(self.E, self.E, bias=False)
        experts = [FFNExpert(d, i) for _ in range(self.n_ffn)]
        experts += [ConstantExpert(d) for _ in range(c["n_const"])]
        experts += [CopyExpert() for _ in range(c["n_copy"])]
        experts += [ZeroExpert() for _ in range(self.n_zero)]
        self.experts = torch.nn.ModuleList(experts)
        eta = [1.0] * self.n_ffn + [c["tau"]] * (self.E - self.n_ffn)
        self.register_buffer("eta", torch.tensor(eta))

    def forward(self, x, z_prev):
        """x [N, D] -> y [N, D], router logits [N, E], balance loss, FFN slots."""
        z = self.wg(x)
        if self.gate_map is not None:
            z = z + self.gate_map(z_prev)
        s = z / z.std(dim=1, keepdim=True) * self.gate_norm_std if self.logits_norm else z
        p = torch.softmax(s, dim=1)
        gates, ids = torch.topk(p, k=self.K, dim=1)
        if self.n_zero > 0:
            gates = torch.where(ids >= self.first_zero, torch.zeros_like(gates), gates)
        den = gates.sum(dim=1, keepdim=True)
        gates = torch.where(den > 0, gates / den.clamp_min(1e-30), torch.zeros_like(gates))
        N = x.shape[0]
        f = torch.bincount(ids.reshape(-1), minlength=self.E).to(x.dtype) / N
        aux = self.beta * (self.eta * f * p.mean(0)).sum()
        xin = x if self.no_mul_topk else self.K * x
        y = torch.zeros_like(x)
        for e, expert in enumerate(self.experts):
            tok, slot = torch.where(ids == e)
            w = gates[tok, slot].unsqueeze(-1)
            y.index_add_(0, tok, expert(xin.index_select(0, tok)) * w)
        return y, z, aux, int((ids < self.n_ffn).sum())


class Block(torch.nn.Module):
    def __init__(self, c, layer_index):
        super().__init__()
        self.input_layernorm = RMSNorm(c["D"], c["eps"])
        self.self_attn = Attention(c["D"], c["H"], c["KVH"], c["hd"])
        self.post_attention_layernorm = RMSNorm(c["D"], c["eps"])
        self.moe = MoEPPLayer(c, layer_index)

    def forward(self, h, z_prev, cos, sin, mask):
        h = h + self.self_attn(self.input_layernorm(h), cos, sin, mask)
        B, T, D = h.shape
        y, z, aux, ffn = self.moe(self.post_attention_layernorm(h).reshape(B * T, D), z_prev)
        return h + y.view(B, T, D), z, aux, ffn


class MoEPPModel(torch.nn.Module):
    def __init__(self, c):
        super().__init__()
        self.c = c
        self.embed_tokens = torch.nn.Embedding(c["V"], c["D"])
        self.layers = torch.nn.ModuleList([Block(c, i) for i in range(c["L"])])
        self.norm = RMSNorm(c["D"], c["eps"])
        self.lm_head = torch.nn.Linear(c["D"], c["V"], bias=False)
        self.rope_cache = {}

    def init_weights(self, std):
        """Norms 1, matrices normal(0, std), constant experts' v normal(0, 1) (the C++ init)."""
        with torch.no_grad():
            for name, p in self.named_parameters():
                if name.endswith(".constant"):
                    p.normal_(0.0, 1.0)
                elif p.dim() >= 2:
                    p.normal_(0.0, std)
                else:
                    p.fill_(1.0)

    def rope(self, T):
        if T not in self.rope_cache:
            hd = self.c["hd"]
            inv = 1.0 / (self.c["theta"] ** (torch.arange(0, hd, 2, dtype=torch.float32) / hd))
            ang = torch.outer(torch.arange(T, dtype=torch.float32), inv)
            emb = torch.cat((ang, ang), dim=-1)
            mask = torch.ones(T, T, dtype=torch.bool).triu(1)
            self.rope_cache[T] = (emb.cos(), emb.sin(), mask)
        return self.rope_cache[T]

    def forward(self, tokens, targets):
        B, T = tokens.shape
        cos, sin, mask = self.rope(T)
        h = self.embed_tokens(tokens)
        z = None
        aux = torch.zeros(())
        ffn = 0
        for blk in self.layers:
            h, z, a, f = blk(h, z, cos, sin, mask)
            aux = aux + a
            ffn += f
        logits = self.lm_head(self.norm(h)).view(B * T, -1)
        ce = F.cross_entropy(logits, targets.reshape(-1))
        return ce + aux, ce, ffn / (B * T * len(self.layers))


def resolve(cfg):
    """Sizes and MoE++ settings from a Hugging Face style config dict (defaults of docs/layer.md: the
    released config class's for its router keys)."""
    router = cfg.get("moe_router", "moepp")
    if router not in ("moepp", "topk"):
        raise SystemExit(f"torch_train_eager.py: moe_router '{router}' is not implemented here")
    if cfg.get("moe_2layer_gate", True) or cfg.get("moe_use_mixtral_gating", False):
        raise SystemExit("torch_train_eager.py: moe_2layer_gate / moe_use_mixtral_gating are not implemented here")
    if cfg.get("moe_capacity_factor") is not None:
        raise SystemExit("torch_train_eager.py: moe_capacity_factor (token dropping) is not implemented here")
    moepp = router == "moepp"
    D, H = int(cfg["hidden_size"]), int(cfg["num_attention_heads"])
    ne = cfg["num_experts"]
    c = dict(V=int(cfg["vocab_size"]), D=D, I=int(cfg["intermediate_size"]), L=int(cfg["num_hidden_layers"]), H=H,
             KVH=int(cfg.get("num_key_value_heads", H)), hd=int(cfg.get("head_dim") or D // H),
             eps=float(cfg.get("rms_norm_eps", 1e-6)), theta=float(cfg.get("rope_theta", 10000.0)),
             E=int(ne[0] if isinstance(ne, list) else ne), K=int(cfg.get("moe_top_k", 2)),
             n_zero=int(cfg.get("n_zero_experts", 1 if moepp else 0)),
             n_copy=int(cfg.get("n_copy_experts", 1 if moepp else 0)),
             n_const=int(cfg.get("n_constant_experts", 2 if moepp else 0)),
             logits_norm=bool(cfg.get("moe_use_logits_norm", False)),
             gate_norm_std=float(cfg.get("moe_gate_norm_std", 1.0)),
             no_mul_topk=bool(cfg.get("moe_feature_no_mul_topk", False)),
             gating_residual=bool(cfg.get("moe_gating_residual", moepp)),
             tau=float(cfg.get("moe_tau", 0.75)) if moepp else 1.0, beta=float(cfg.get("moe_aux_loss_coef", 0.01)))
    c["n_ffn"] = c["E"] - c["n_zero"] - c["n_copy"] - c["n_const"]
    return c


def set_blas_threads(n):
    """Debian's torch runs its matmuls in OpenBLAS (pthread build), whose pool torch.set_num_threads does
    not touch; sets it directly. Returns the count OpenBLAS reports, or None if it is not loaded."""
    for name in ("libopenblas.so.0", "libopenblas.so"):
        try:
            lib = ctypes.CDLL(name)
        except OSError:
            continue
        lib.openblas_set_num_threads(ctypes.c_int(n))
        return int(lib.openblas_get_num_threads())
    return None


def time_setting(c, a, batches):
    """Median step ms (and the FFN slots per token of the last step) with the current thread settings."""
    torch.manual_seed(a.seed)
    model = MoEPPModel(c)
    model.init_weights(a.init_std)
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": a.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=a.lr, betas=(a.beta1, a.beta2), eps=1e-8)
    times, ffn, losses = [], 0.0, []
    for s, (x, t) in enumerate(batches):
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss, ce, ffn = model(x, t)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), a.clip)
        opt.step()
        dt = time.perf_counter() - t0
        losses.append(float(ce))
        if s >= a.warmup:
            times.append(dt * 1e3)
    n_params = sum(p.numel() for p in model.parameters())
    return statistics.median(times), ffn, losses, n_params


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", required=True, help="Hugging Face style config.json of the model")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--steps", type=int, default=5, help="timed steps per thread setting (median reported)")
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--threads", default="1,2",
                    help="comma list; every (torch threads, OpenBLAS threads) pair from it is tried")
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--weight-decay", type=float, default=0.1)
    ap.add_argument("--beta1", type=float, default=0.9)
    ap.add_argument("--beta2", type=float, default=0.95)
    ap.add_argument("--clip", type=float, default=1.0)
    ap.add_argument("--init-std", type=float, default=0.02)
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args(argv)
    if min(a.batch, a.seq_len, a.steps) < 1 or a.warmup < 0:
        ap.error("--batch, --seq-len, --steps must be >= 1 and --warmup >= 0")
    try:
        threads = [int(t) for t in a.threads.split(",") if t]
    except ValueError:
        ap.error("--threads must be a comma list of integers")
    if not threads or min(threads) < 1:
        ap.error("--threads must list counts >= 1")
    with open(a.model) as f:
        c = resolve(json.load(f))

    g = torch.Generator().manual_seed(a.seed + 7)
    batches = []
    for _ in range(a.warmup + a.steps):
        w = torch.randint(0, c["V"], (a.batch, a.seq_len + 1), generator=g)
        batches.append((w[:, :-1].contiguous(), w[:, 1:].contiguous()))

    by_threads, best = {}, None
    for tt in threads:
        for bt in threads:
            torch.set_num_threads(tt)
            got_bt = set_blas_threads(bt)
            ms, ffn, losses, n_params = time_setting(c, a, batches)
            by_threads[f"torch{tt}_blas{bt}"] = round(ms, 3)
            if best is None or ms < best[0]:
                best = (ms, tt, got_bt, ffn, losses, n_params)
            if got_bt is None:
                break  # no OpenBLAS: the second count changes nothing

    ms, tt, bt, ffn, losses, n_params = best
    rec = {"impl": "torch_eager", "torch": torch.__version__, "step_ms": round(ms, 3), "threads": tt,
           "blas_threads": bt, "by_threads": by_threads, "batch": a.batch, "seq_len": a.seq_len,
           "steps": a.steps, "warmup": a.warmup, "params": n_params, "ffn_experts_per_token": round(ffn, 4),
           "loss_first": round(losses[0], 4), "loss_last": round(losses[-1], 4)}
    print(json.dumps(rec))
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
