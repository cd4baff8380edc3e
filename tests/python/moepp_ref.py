"""Independent PyTorch reference of the MoE++ layer, written from docs/layer.md (not from src/).
Where the released MoE++ code (SkyworkAI/MoE-plus-plus: moe_plus_plus_layer.py,
configuration_moe_plus_plus.py) defines a behaviour, this file follows it: the defaults of the
released config class for missing router keys (RELEASED_DEFAULTS) and MOELayer.forward's input
scaling (K·x only when neither moe_use_mixtral_gating nor moe_feature_no_mul_topk is set).

Everything is plain torch ops on the dtype and device of the given tensors (fp32 in the parity tests,
fp64 for gradcheck, device "cuda" in gpu_layer_parity.py); gradients come from autograd. Top-k selection, the capacity drop, f_i and ReMoE's
indicator are discrete (not differentiated), exactly as the doc says.

Public API
  resolve_config(cfg)            -> Cfg (all defaults applied, as in docs/layer.md)
  param_shapes(c)                -> {name: shape} of the layer's tensors (names relative to
                                    `model.layers.{i}.mlp.moe.`)
  make_weights(c, seed, ...)     -> {name: np.float32 array}
  forward(c, W, x, z_prev)       -> dict of torch tensors: y, router_logits, topk_ids, topk_weights,
                                    slot_kept, aux_loss (training), plus p / s / scores for checks
  loss_and_grads(c, W, x, z_prev, grad_y, grad_rl)
                                 -> (outputs, grads) with grads named like the CLI's output
                                    (`grad.x`, `grad.gate_residual`, `grad.<param>`)
  random_case(config, T, seed)   -> dict(config, weights, inputs) with no near-ties in the selection
"""
import math
from dataclasses import dataclass

import numpy as np
import torch

ROUTERS = ("moepp", "topk", "adamoe", "relu")

# configuration_moe_plus_plus.py's __init__ defaults for the router keys it defines.
RELEASED_DEFAULTS = {
    "moe_2layer_gate": True,
    "moe_use_logits_norm": False,
    "moe_gate_norm_std": 1.0,
    "moe_use_mixtral_gating": False,
    "moe_feature_no_mul_topk": False,
}


@dataclass
class Cfg:
    D: int
    I: int
    E: int
    n_zero: int
    n_copy: int
    n_const: int
    K: int
    router: str
    two_layer: bool
    logits_norm: bool
    gate_norm_std: float
    mixtral: bool
    no_mul_topk: bool
    gating_residual: bool
    tau: float
    beta: float
    gamma: object  # None or float
    relu_l1: float
    layer_index: int
    training: bool

    @property
    def n_ffn(self):
        return self.E - self.n_zero - self.n_copy - self.n_const

    @property
    def n_zc(self):
        return self.n_zero + self.n_copy + self.n_const

    @property
    def uses_residual(self):
        return self.gating_residual and self.layer_index > 0

    @property
    def input_scale(self):
        """MOELayer.forward: `if not (moe_use_mixtral_gating or moe_feature_no_mul_topk): x *= MOE_TOP_K`."""
        return 1 if (self.mixtral or self.no_mul_topk) else self.K

    def kind(self, e):
        """'ffn', 'const', 'copy' or 'zero' for expert index e (doc's index order)."""
        if e < self.n_ffn:
            return "ffn"
        if e < self.n_ffn + self.n_const:
            return "const"
        if e < self.n_ffn + self.n_const + self.n_copy:
            return "copy"
        return "zero"

    def is_zero(self, e):
        return self.kind(e) == "zero"


def resolve_config(cfg):
    """Apply docs/layer.md defaults (the released config class's for its router keys) to a config dict
    (no error reporting beyond asserts)."""
    ne = cfg["num_experts"]
    E = int(ne[0]) if isinstance(ne, list) else int(ne)
    router = cfg.get("moe_router", "moepp")
    assert router in ROUTERS, router
    is_moepp = router == "moepp"
    c = Cfg(
        D=int(cfg["hidden_size"]),
        I=int(cfg["intermediate_size"]),
        E=E,
        n_zero=int(cfg.get("n_zero_experts", 1 if is_moepp else 0)),
        n_copy=int(cfg.get("n_copy_experts", 1 if is_moepp else 0)),
        n_const=int(cfg.get("n_constant_experts", 2 if is_moepp else 0)),
        K=int(cfg.get("moe_top_k", 2)),
        router=router,
        two_layer=bool(cfg.get("moe_2layer_gate", RELEASED_DEFAULTS["moe_2layer_gate"])),
        logits_norm=bool(cfg.get("moe_use_logits_norm", RELEASED_DEFAULTS["moe_use_logits_norm"])),
        gate_norm_std=float(cfg.get("moe_gate_norm_std", RELEASED_DEFAULTS["moe_gate_norm_std"])),
        mixtral=bool(cfg.get("moe_use_mixtral_gating", RELEASED_DEFAULTS["moe_use_mixtral_gating"])),
        no_mul_topk=bool(cfg.get("moe_feature_no_mul_topk", RELEASED_DEFAULTS["moe_feature_no_mul_topk"])),
        gating_residual=bool(cfg.get("moe_gating_residual", is_moepp)),
        tau=float(cfg.get("moe_tau", 0.75)),
        beta=float(cfg.get("moe_aux_loss_coef", 0.01)),
        gamma=cfg.get("moe_capacity_factor", None),
        relu_l1=float(cfg.get("moe_relu_l1_coef", 1e-8)),
        layer_index=int(cfg.get("layer_index", 0)),
        training=bool(cfg.get("training", False)),
    )
    if c.gamma is not None:
        c.gamma = float(c.gamma)
    assert c.n_ffn >= 1 and 1 <= c.K <= c.E
    if router in ("topk", "relu"):
        assert c.n_zc == 0
    if router == "adamoe":
        assert c.n_copy == 0 and c.n_const == 0
    if router == "relu":
        assert not (c.training and c.gamma is not None), "relu + capacity is a config error"
    return c


def param_shapes(c, include_gate_map=None):
    """{name: shape}. include_gate_map: None = exactly when the gating residual is used
    (on and layer_index > 0); True = also in layer 0 where it is optional and ignored."""
    shapes = {}
    if c.two_layer:
        shapes["gate.wg.0.weight"] = (8 * c.E, c.D)
        shapes["gate.wg.2.weight"] = (c.E, 8 * c.E)
    else:
        shapes["gate.wg.weight"] = (c.E, c.D)
    gm = c.uses_residual if include_gate_map is None else (c.uses_residual or (include_gate_map and c.gating_residual))
    if gm:
        shapes["gate.gate_map.weight"] = (c.E, c.E)
    for e in range(c.E):
        k = c.kind(e)
        if k == "ffn":
            shapes[f"experts.experts.{e}.up_proj.weight"] = (2 * c.I, c.D)
            shapes[f"experts.experts.{e}.down_proj.weight"] = (c.D, c.I)
        elif k == "const":
            shapes[f"experts.experts.{e}.wg.weight"] = (2, c.D)
            shapes[f"experts.experts.{e}.constant"] = (c.D,)
    return shapes


def make_weights(c, seed, include_gate_map=None, router_scale=1.0):
    """Random weights with O(1) activations: x ~ N(0,1) gives logits ~ N(0, router_scale^2)."""
    rng = np.random.default_rng(seed)
    W = {}
    for name, shape in param_shapes(c, include_gate_map).items():
        if name.endswith(".constant"):
            std = 1.0
        elif name == "gate.wg.weight" or name == "gate.wg.0.weight":
            std = router_scale / math.sqrt(c.D)
        elif name == "gate.wg.2.weight":
            std = router_scale * 2.0 / math.sqrt(8 * c.E)
        elif name == "gate.gate_map.weight":
            std = 0.7 / math.sqrt(c.E)
        elif name.endswith("down_proj.weight"):
            std = 1.0 / math.sqrt(c.I)
        else:  # up_proj, constant expert wg
            std = 1.0 / math.sqrt(c.D)
        W[name] = (rng.standard_normal(shape) * std).astype(np.float32)
    return W


# ----------------------------------------------------------------------------------------------------
# forward


def _logits(c, W, x, z_prev):
    if c.two_layer:
        z = torch.tanh(x @ W["gate.wg.0.weight"].t()) @ W["gate.wg.2.weight"].t()
    else:
        z = x @ W["gate.wg.weight"].t()
    if c.uses_residual:
        assert z_prev is not None, "gate_residual required"
        z = z + z_prev @ W["gate.gate_map.weight"].t()
    return z


def _scores(c, z):
    if not c.logits_norm:
        return z
    std = torch.std(z, dim=1, unbiased=True, keepdim=True)
    pos = std > 0
    safe = torch.where(pos, std, torch.ones_like(std))
    return torch.where(pos, z / safe * c.gate_norm_std, torch.zeros_like(z))


def capacities(c, T):
    """Per-expert capacities as in docs/layer.md (computed in double precision)."""
    S = c.K * T
    if c.router == "moepp":
        den = c.tau * c.n_ffn + c.n_zc
        c_ffn = math.ceil(c.gamma * c.tau * S / den)
        c_zc = math.ceil(c.gamma * S / den)
        return [c_ffn if c.kind(e) == "ffn" else c_zc for e in range(c.E)]
    cap = math.ceil(c.gamma * S / c.E)
    return [cap] * c.E


def admit(ids, caps):
    """slot_kept [T, K] for selection ids [T, K] (numpy ints): rank-major, then token order."""
    T, K = ids.shape
    used = [0] * len(caps)
    kept = np.zeros((T, K), dtype=np.int32)
    for k in range(K):
        for t in range(T):
            e = int(ids[t, k])
            if used[e] < caps[e]:
                used[e] += 1
                kept[t, k] = 1
    return kept


def _expert_out(c, W, e, x_in):
    k = c.kind(e)
    if k == "ffn":
        h = x_in @ W[f"experts.experts.{e}.up_proj.weight"].t()
        g, u = h[:, : c.I], h[:, c.I :]
        return (torch.nn.functional.silu(g) * u) @ W[f"experts.experts.{e}.down_proj.weight"].t()
    if k == "const":
        a = torch.softmax(x_in @ W[f"experts.experts.{e}.wg.weight"].t(), dim=1)
        return a[:, 0:1] * x_in + a[:, 1:2] * W[f"experts.experts.{e}.constant"][None, :]
    if k == "copy":
        return x_in
    return torch.zeros_like(x_in)


def _topk_ids(v, K):
    """Ids of the K largest entries per row, by descending value; exact ties go to the lower id
    (stable sort). docs/layer.md does not state a tie rule; this is the C++ side's behaviour and only
    matters for exactly equal scores (e.g. an all-zero token: std = 0, s = 0, p uniform)."""
    _, order = torch.sort(v, dim=1, descending=True, stable=True)
    return order[:, :K].contiguous()


def forward(c, W, x, z_prev=None):
    """The layer's forward. W: name -> tensor; x [T, D]; z_prev [T, E] or None."""
    T = x.shape[0]
    z = _logits(c, W, x, z_prev)
    out = {"router_logits": z}
    if c.router == "relu":
        R = torch.relu(z)
        active = (R > 0).detach()
        ids = torch.full((T, c.E), -1, dtype=torch.int64, device=z.device)
        for t in range(T):
            act = [e for e in range(c.E) if bool(active[t, e])]
            ids[t, : len(act)] = torch.tensor(act, dtype=torch.int64, device=z.device)
        valid = ids >= 0
        kept = valid.to(torch.int32)
        comb = R * active  # [T, E] combine weights
        wts = torch.gather(R, 1, ids.clamp(min=0)) * valid.to(z.dtype)
        out.update(topk_ids=ids, topk_weights=wts, slot_kept=kept, R=R)
        if c.training:
            ind = active.to(z.dtype)
            out["aux_loss"] = c.relu_l1 * c.E / (c.K * T * T) * (R.sum(0) * ind.sum(0)).sum()
    else:
        s = _scores(c, z)
        p = torch.softmax(s, dim=1)
        out.update(s=s, p=p)
        if c.mixtral:
            assert c.router in ("moepp", "topk")
            ids = _topk_ids(s.detach(), c.K)
            w = torch.softmax(torch.gather(s, 1, ids), dim=1)
        else:
            ids = _topk_ids(p.detach(), c.K)
            pk = torch.gather(p, 1, ids)
            zero_mask = torch.tensor(
                [[0.0 if c.is_zero(int(e)) else 1.0 for e in row] for row in ids.tolist()], dtype=p.dtype,
                device=p.device,
            ).reshape(T, c.K)
            q = pk * zero_mask
            den = q.sum(1, keepdim=True)
            safe = torch.where(den > 0, den, torch.ones_like(den))
            w = q / safe
        caps = capacities(c, T) if (c.training and c.gamma is not None) else None
        kept_np = admit(ids.cpu().numpy(), caps) if caps is not None else np.ones((T, c.K), np.int32)
        kept = torch.from_numpy(kept_np).to(z.device)
        comb = torch.zeros((T, c.E), dtype=z.dtype, device=z.device).scatter_add(1, ids, w * kept.to(z.dtype))
        out.update(topk_ids=ids, topk_weights=w, slot_kept=kept, capacities=caps)
        if c.training:
            sel = torch.zeros((T, c.E), dtype=z.dtype, device=z.device).scatter(1, ids, 1.0)  # selection before drops
            P = p.mean(0)
            if c.router == "adamoe":
                f = sel.sum(0) / (T * c.K)
                null = [e for e in range(c.E) if c.is_zero(e)]
                if null:
                    fn = f[null].mean()
                    f = f.clone()
                    f[null] = fn
                out["aux_loss"] = c.beta * c.E * (f * P).sum()
            else:
                f = sel.sum(0) / T
                eta = torch.tensor(
                    [1.0 if (c.router == "topk" or c.kind(e) == "ffn") else c.tau for e in range(c.E)],
                    dtype=z.dtype, device=z.device,
                )
                out["aux_loss"] = c.beta * (eta * f * P).sum()
    x_in = x * c.input_scale
    y = torch.zeros_like(x)
    for e in range(c.E):
        if c.kind(e) == "zero":
            continue
        y = y + comb[:, e : e + 1] * _expert_out(c, W, e, x_in)
    out["y"] = y
    out["comb"] = comb
    return out


def loss_and_grads(c, W_np, x_np, z_prev_np=None, grad_y_np=None, grad_rl_np=None, dtype=torch.float32, device="cpu"):
    """Run forward and (if grad_y given) autograd backward of
    L = sum(y * grad_y) + sum(z * grad_router_logits) + aux_loss (training), on `device` (e.g. "cuda").
    Returns (outputs as numpy, grads as numpy named like the CLI)."""
    def tensor(a, grad=False):
        return torch.tensor(np.asarray(a), dtype=dtype, device=device, requires_grad=grad)

    W = {k: tensor(v, True) for k, v in W_np.items()}
    x = tensor(x_np, True)
    zp = None
    if z_prev_np is not None:
        zp = tensor(z_prev_np, True)
    out = forward(c, W, x, zp)
    res = {
        "y": out["y"].detach().cpu().numpy(),
        "router_logits": out["router_logits"].detach().cpu().numpy(),
        "topk_ids": out["topk_ids"].cpu().numpy().astype(np.int32),
        "topk_weights": out["topk_weights"].detach().cpu().numpy(),
        "slot_kept": out["slot_kept"].cpu().numpy().astype(np.int32),
    }
    if c.training:
        res["aux_loss"] = out["aux_loss"].detach().reshape(1).cpu().numpy()
    grads = {}
    if grad_y_np is not None:
        L = (out["y"] * tensor(grad_y_np)).sum()
        if grad_rl_np is not None:
            L = L + (out["router_logits"] * tensor(grad_rl_np)).sum()
        if c.training:
            L = L + out["aux_loss"]
        names = list(W.keys())
        wrt = [x] + [W[n] for n in names]
        if c.uses_residual:
            wrt.append(zp)
        gs = torch.autograd.grad(L, wrt, allow_unused=True)
        def np_or_zero(g, t):
            return (torch.zeros_like(t) if g is None else g).detach().cpu().numpy()
        grads["grad.x"] = np_or_zero(gs[0], x)
        for n, g in zip(names, gs[1 : 1 + len(names)]):
            grads["grad." + n] = np_or_zero(g, W[n])
        if c.uses_residual:
            grads["grad.gate_residual"] = np_or_zero(gs[-1], zp)
    return res, grads, out


# ----------------------------------------------------------------------------------------------------
# random cases


def selection_margin(c, out):
    """Smallest gap that a tiny numeric difference could flip: between consecutive sorted scores
    among the first K+1 (non-relu; p, or s for mixtral) or |z| (relu). Also |std| of logits."""
    if c.router == "relu":
        return float(out["router_logits"].detach().abs().min())
    sc = (out["s"] if c.mixtral else out["p"]).detach()
    srt, _ = torch.sort(sc, dim=1, descending=True)
    m = min(c.K + 1, c.E)
    if m < 2:
        return float("inf")
    gaps = srt[:, : m - 1] - srt[:, 1:m]
    return float(gaps.min())


def random_case(config, T, seed, include_gate_map=None, weight_dtype="F32", router_scale=1.0,
                grad_y=True, grad_rl=True, margin=1e-4, max_tries=200):
    """A case with random weights/inputs whose top-k selection has no near-ties (re-draws the seed).

    Returns dict: config, cfg (resolved), weights (np f32, already rounded to bf16/f16 if asked),
    weight_dtype, inputs (np: x, gate_residual?, grad_y?, grad_router_logits?), seed (used)."""
    c = resolve_config(config)
    for attempt in range(max_tries):
        s = seed * 1000 + attempt
        W = make_weights(c, s, include_gate_map, router_scale)
        if weight_dtype == "BF16":
            from safetensors_np import round_to_bf16
            W = {k: round_to_bf16(v) for k, v in W.items()}
        elif weight_dtype == "F16":
            W = {k: v.astype(np.float16).astype(np.float32) for k, v in W.items()}
        rng = np.random.default_rng(s + 7919)
        inp = {"x": rng.standard_normal((T, c.D)).astype(np.float32)}
        if c.uses_residual:
            inp["gate_residual"] = rng.standard_normal((T, c.E)).astype(np.float32)
        if grad_y:
            inp["grad_y"] = rng.standard_normal((T, c.D)).astype(np.float32)
            if grad_rl:
                inp["grad_router_logits"] = rng.standard_normal((T, c.E)).astype(np.float32)
        with torch.no_grad():
            Wt = {k: torch.from_numpy(v) for k, v in W.items()}
            zp = torch.from_numpy(inp["gate_residual"]) if "gate_residual" in inp else None
            out = forward(c, Wt, torch.from_numpy(inp["x"]), zp)
        ok = selection_margin(c, out) >= margin
        if ok and c.router != "relu" and c.logits_norm:
            std = torch.std(out["router_logits"], dim=1, unbiased=True)
            ok = bool((std > 1e-3).all())
        if ok:
            return dict(config=config, cfg=c, weights=W, weight_dtype=weight_dtype, inputs=inp, seed=s)
    raise RuntimeError(f"no tie-free case found for seed {seed}")
