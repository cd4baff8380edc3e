#!/usr/bin/python3
"""Self-checks of the PyTorch reference (moepp_ref.py) alone; needs no C++ binary (--moepp is accepted
and ignored so that CTest can run it like the other scripts).

1. torch.autograd.gradcheck in float64 of y, router_logits and aux_loss w.r.t. x, gate_residual and
   every parameter, for every router and option (selection is piecewise constant: cases are drawn
   without near-ties, so finite differences do not cross a selection boundary).
2. A second, loop-per-token numpy implementation of the forward (written separately from the
   vectorised torch one) must agree to 1e-10 in float64: y, weights, ids, kept, aux_loss.
3. Properties: with the moepp router a token whose top-2 holds the zero expert has partner weight
   exactly 1.0; capacity admission matches an independent sort-based admission; dropless
   inference keeps every slot.
Final line: `N passed, M failed`.
"""
import math
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import moepp_ref as R  # noqa: E402

PASSED = 0
FAILED = 0


def report(name, ok, msg=""):
    global PASSED, FAILED
    if ok:
        PASSED += 1
        print(f"PASS {name} {msg}")
    else:
        FAILED += 1
        print(f"FAIL {name} {msg}")


def base(**kw):
    # The 7B checkpoint's router flags spelled out; the released config class's defaults differ.
    cfg = {"hidden_size": 8, "intermediate_size": 6, "num_experts": [8], "moe_2layer_gate": False,
           "moe_use_logits_norm": True, "moe_feature_no_mul_topk": True}
    cfg.update(kw)
    return cfg


# ---------------------------------------------------------------------------------------------------
# 1. gradcheck


def gradcheck_case(name, config, T, seed, fast=True):
    case = R.random_case(config, T, seed, margin=1e-3)
    c = case["cfg"]
    names = list(case["weights"].keys())
    params = [torch.tensor(case["weights"][n], dtype=torch.float64, requires_grad=True) for n in names]
    x = torch.tensor(case["inputs"]["x"], dtype=torch.float64, requires_grad=True)
    zp = None
    if "gate_residual" in case["inputs"]:
        zp = torch.tensor(case["inputs"]["gate_residual"], dtype=torch.float64, requires_grad=True)
    ref = R.forward(c, dict(zip(names, [p.detach() for p in params])), x.detach(), None if zp is None else zp.detach())

    def f(x, *rest):
        ps = rest[: len(names)]
        z = rest[len(names)] if zp is not None else None
        out = R.forward(c, dict(zip(names, ps)), x, z)
        # selection must not have changed under the perturbation (else gradcheck is meaningless)
        assert torch.equal(out["topk_ids"], ref["topk_ids"]), "selection changed"
        outs = [out["y"].reshape(-1), out["router_logits"].reshape(-1), out["topk_weights"].reshape(-1)]
        if "aux_loss" in out:
            outs.append(out["aux_loss"].reshape(1) * 100.0)
        return torch.cat(outs)

    inputs = [x] + params + ([zp] if zp is not None else [])
    try:
        ok = torch.autograd.gradcheck(f, inputs, eps=1e-6, atol=1e-6, rtol=1e-5, raise_exception=True,
                                           fast_mode=fast)
        report("gradcheck/" + name, ok)
    except Exception as e:  # noqa: BLE001
        report("gradcheck/" + name, False, str(e).splitlines()[0][:300])


# ---------------------------------------------------------------------------------------------------
# 2. loop-per-token numpy forward (float64)


def np_forward(c, W, x, zp):
    T, D = x.shape
    E, K = c.E, c.K
    sig = lambda v: 1.0 / (1.0 + np.exp(-v))  # noqa: E731
    if c.two_layer:
        z = np.tanh(x @ W["gate.wg.0.weight"].T) @ W["gate.wg.2.weight"].T
    else:
        z = x @ W["gate.wg.weight"].T
    if c.gating_residual and c.layer_index > 0:
        z = z + zp @ W["gate.gate_map.weight"].T
    xin = x * (K if not (c.mixtral or c.no_mul_topk) else 1)  # released MOELayer.forward
    y = np.zeros_like(x)
    width = E if c.router == "relu" else K
    ids = np.full((T, width), -1, np.int64)
    wts = np.zeros((T, width))
    kept = np.zeros((T, width), np.int32)

    def expert(e, v):
        k = c.kind(e)
        if k == "ffn":
            h = W[f"experts.experts.{e}.up_proj.weight"] @ v
            g, u = h[: c.I], h[c.I :]
            return W[f"experts.experts.{e}.down_proj.weight"] @ (g * sig(g) * u)
        if k == "const":
            l = W[f"experts.experts.{e}.wg.weight"] @ v
            a = np.exp(l - l.max())
            a = a / a.sum()
            return a[0] * v + a[1] * W[f"experts.experts.{e}.constant"]
        if k == "copy":
            return v.copy()
        return np.zeros_like(v)

    aux = None
    if c.router == "relu":
        Rm = np.maximum(z, 0)
        for t in range(T):
            j = 0
            for e in range(E):
                if Rm[t, e] > 0:
                    ids[t, j], wts[t, j], kept[t, j] = e, Rm[t, e], 1
                    j += 1
                    y[t] += Rm[t, e] * expert(e, xin[t])
        if c.training:
            tot = 0.0
            for e in range(E):
                tot += Rm[:, e].sum() * (Rm[:, e] > 0).sum()
            aux = c.relu_l1 * E / (K * T * T) * tot
        return dict(y=y, z=z, ids=ids, w=wts, kept=kept, aux=aux)

    P = np.zeros((T, E))
    for t in range(T):
        zt = z[t]
        if c.logits_norm:
            m = zt.mean()
            sd = math.sqrt(((zt - m) ** 2).sum() / (E - 1))
            st = zt / sd * c.gate_norm_std if sd > 0 else np.zeros(E)
        else:
            st = zt
        pt = np.exp(st - st.max())
        pt /= pt.sum()
        P[t] = pt
        key = st if c.mixtral else pt
        order = sorted(range(E), key=lambda e: -key[e])[:K]
        ids[t] = order
        if c.mixtral:
            v = np.array([st[e] for e in order])
            v = np.exp(v - v.max())
            wts[t] = v / v.sum()
        else:
            q = np.array([0.0 if c.is_zero(e) else pt[e] for e in order])
            wts[t] = q / q.sum() if q.sum() > 0 else 0.0
    # capacity, by an explicit sorted list of (rank, token) keys
    if c.training and c.gamma is not None:
        S = K * T
        if c.router == "moepp":
            den = c.tau * c.n_ffn + c.n_zc
            cap = [math.ceil(c.gamma * (c.tau if c.kind(e) == "ffn" else 1.0) * S / den) for e in range(E)]
        else:
            cap = [math.ceil(c.gamma * S / E)] * E
        slots = sorted(((k, t) for t in range(T) for k in range(K)))
        load = {}
        for k, t in slots:
            e = ids[t, k]
            load[e] = load.get(e, 0) + 1
            kept[t, k] = 1 if load[e] <= cap[e] else 0
    else:
        kept[:] = 1
    for t in range(T):
        for k in range(K):
            if kept[t, k]:
                y[t] += wts[t, k] * expert(ids[t, k], xin[t])
    if c.training:
        Pm = P.mean(0)
        cnt = np.zeros(E)
        for t in range(T):
            for e in ids[t]:
                cnt[e] += 1
        if c.router == "adamoe":
            f = cnt / (T * K)
            null = [e for e in range(E) if c.is_zero(e)]
            if null:
                f[null] = f[null].mean()
            aux = c.beta * E * float((f * Pm).sum())
        else:
            f = cnt / T
            eta = np.array([1.0 if (c.router == "topk" or c.kind(e) == "ffn") else c.tau for e in range(E)])
            aux = c.beta * float((eta * f * Pm).sum())
    return dict(y=y, z=z, ids=ids, w=wts, kept=kept, aux=aux)


def crosscheck_case(name, config, T, seed):
    case = R.random_case(config, T, seed)
    c = case["cfg"]
    W64 = {k: v.astype(np.float64) for k, v in case["weights"].items()}
    x = case["inputs"]["x"].astype(np.float64)
    zp = case["inputs"].get("gate_residual")
    zp = None if zp is None else zp.astype(np.float64)
    ref, _, _ = R.loss_and_grads(c, W64, x, zp, dtype=torch.float64)
    alt = np_forward(c, W64, x, zp)
    errs = []
    for a, b, nm in [(ref["y"], alt["y"], "y"), (ref["router_logits"], alt["z"], "z"),
                     (ref["topk_weights"], alt["w"], "w")]:
        e = float(np.abs(a - b).max()) if a.size else 0.0
        if e > 1e-10:
            errs.append(f"{nm} err {e:.3g}")
    if not np.array_equal(ref["topk_ids"], alt["ids"]):
        errs.append("ids differ")
    if not np.array_equal(ref["slot_kept"], alt["kept"]):
        errs.append("kept differ")
    if c.training:
        e = abs(float(ref["aux_loss"][0]) - alt["aux"])
        if e > 1e-12:
            errs.append(f"aux err {e:.3g}")
    dropped = int((ref["slot_kept"] == 0).sum()) if c.router != "relu" else 0
    report("crosscheck/" + name, not errs, "; ".join(errs) + f" (T={T}, dropped={dropped})")


# ---------------------------------------------------------------------------------------------------
# 3. properties


def prop_zero_partner():
    cfg = base(num_experts=[6], intermediate_size=4, n_zero_experts=1, n_copy_experts=1, n_constant_experts=1)
    c = R.resolve_config(cfg)
    found = 0
    bad = 0
    for seed in range(20):
        case = R.random_case(cfg, 32, seed)
        res, _, _ = R.loss_and_grads(c, case["weights"], case["inputs"]["x"])
        for t in range(32):
            ids = list(res["topk_ids"][t])
            if c.E - 1 in ids:
                found += 1
                j = ids.index(c.E - 1)
                if res["topk_weights"][t, j] != 0.0 or res["topk_weights"][t, 1 - j] != 1.0:
                    bad += 1
    report("property/zero_partner_weight_is_1", found > 0 and bad == 0, f"tokens with zero expert: {found}, bad: {bad}")


def prop_dropless():
    cfg = base(training=False, moe_capacity_factor=0.5)
    case = R.random_case(cfg, 16, 3)
    res, _, _ = R.loss_and_grads(case["cfg"], case["weights"], case["inputs"]["x"])
    report("property/inference_is_dropless", bool((res["slot_kept"] == 1).all()))


def prop_capacity_drops():
    cfg = base(training=True, moe_capacity_factor=0.5, moe_top_k=2)
    case = R.random_case(cfg, 16, 5)
    c = case["cfg"]
    res, _, _ = R.loss_and_grads(c, case["weights"], case["inputs"]["x"])
    caps = R.capacities(c, 16)
    ids, kept = res["topk_ids"], res["slot_kept"]
    ok = True
    for e in range(c.E):
        n_kept = int(((ids == e) & (kept == 1)).sum())
        n_sel = int((ids == e).sum())
        ok &= n_kept == min(n_sel, caps[e])
    report("property/capacity_counts", ok and (kept == 0).any(), f"caps={caps}, drops={int((kept == 0).sum())}")


def main():
    cases = [
        ("moepp_default", base(), 6),
        ("moepp_2layer", base(moe_2layer_gate=True), 5),
        ("moepp_nonorm", base(moe_use_logits_norm=False), 5),
        ("moepp_gns2.5", base(moe_gate_norm_std=2.5), 5),
        ("moepp_mixtral", base(moe_use_mixtral_gating=True), 5),
        ("moepp_mulK", base(moe_feature_no_mul_topk=False, moe_top_k=3), 5),
        ("moepp_mixtral_mulK_unscaled", base(moe_use_mixtral_gating=True, moe_feature_no_mul_topk=False), 5),
        ("moepp_released_defaults", {"hidden_size": 8, "intermediate_size": 6, "num_experts": [8]}, 5),
        ("moepp_residual", base(layer_index=1), 5),
        ("moepp_train", base(training=True, moe_aux_loss_coef=1.0), 6),
        ("moepp_train_cap", base(training=True, moe_capacity_factor=0.6, moe_aux_loss_coef=1.0), 8),
        ("moepp_2zero", base(num_experts=[9], n_zero_experts=2, n_copy_experts=0, n_constant_experts=1,
                             moe_top_k=3, training=True, moe_aux_loss_coef=0.5), 6),
        ("topk", base(moe_router="topk", training=True, moe_aux_loss_coef=1.0), 5),
        ("topk_mixtral_cap", base(moe_router="topk", moe_use_mixtral_gating=True, training=True,
                                  moe_capacity_factor=0.5, moe_aux_loss_coef=1.0), 8),
        ("adamoe", base(moe_router="adamoe", n_zero_experts=3, moe_top_k=3, training=True,
                        moe_aux_loss_coef=1.0), 6),
        ("relu", base(moe_router="relu", training=True, moe_relu_l1_coef=0.3), 5),
        ("relu_residual", base(moe_router="relu", moe_gating_residual=True, layer_index=2), 4),
    ]
    for i, (name, cfg, T) in enumerate(cases):
        gradcheck_case(name, cfg, T, 100 + i, fast=True)
        if name in ("moepp_train_cap", "adamoe", "relu"):  # full Jacobians for a few
            gradcheck_case(name + "_full", cfg, T, 100 + i, fast=False)
    cross = cases + [
        ("moepp_T1", base(), 1),
        ("moepp_K1", base(moe_top_k=1), 7),
        ("moepp_big_cap1", base(num_experts=[12], n_zero_experts=1, n_copy_experts=1, n_constant_experts=6,
                                training=True, moe_capacity_factor=1.0), 40),
        ("adamoe_cap", base(moe_router="adamoe", n_zero_experts=2, moe_top_k=3, training=True,
                            moe_capacity_factor=0.7), 30),
    ]
    for i, (name, cfg, T) in enumerate(cross):
        crosscheck_case(name, cfg, T, 200 + i)
    prop_zero_partner()
    prop_dropless()
    prop_capacity_drops()
    print(f"{PASSED} passed, {FAILED} failed")
    return 0 if FAILED == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
