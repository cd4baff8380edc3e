#!/usr/bin/env python3
"""The BF16 bound of gpu_layer_parity.py checked on the CPU: BF16 storage on the expert path, emulated in
PyTorch at the points where the GPU layer stores BF16 (src/gpu/gpu_experts.h: the gathered inputs X, the
weights up/down, H, A, O forward; dX, dH, dA, dO backward; products in fp32), moves no output or gradient
of any non-relu case of test_layer_parity.py's build_cases() by more than 2/3 of the bound
(max|bf16 - f32| <= BOUND / 1.5 * max(1, max|f32|)), so the bound keeps a margin for the GPU's own
accumulation order. The selections (topk_ids, slot_kept) must not change (the router is fp32).

Run: python3 tests/python/gpu_bf16_bound.py [-v]   (CPU only; prints the worst error per tensor kind)
"""
import argparse
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gpu_layer_parity as G  # noqa: E402
import helpers as H  # noqa: E402
import moepp_ref as R  # noqa: E402
import test_layer_parity as P  # noqa: E402


class RoundBoth(torch.autograd.Function):
    """A BF16-stored activation: rounded forward, its gradient rounded backward."""

    @staticmethod
    def forward(ctx, t):
        return t.bfloat16().float()

    @staticmethod
    def backward(ctx, g):
        return g.bfloat16().float()


class RoundForward(torch.autograd.Function):
    """A BF16 copy of an fp32 weight: rounded forward; the weight's gradient stays fp32."""

    @staticmethod
    def forward(ctx, t):
        return t.bfloat16().float()

    @staticmethod
    def backward(ctx, g):
        return g


FP32_EXPERT_OUT = R._expert_out


def bf16_expert_out(c, W, e, x_in):
    if c.kind(e) != "ffn":
        return FP32_EXPERT_OUT(c, W, e, x_in)
    xr = RoundBoth.apply(x_in)
    up = RoundForward.apply(W[f"experts.experts.{e}.up_proj.weight"])
    down = RoundForward.apply(W[f"experts.experts.{e}.down_proj.weight"])
    h = RoundBoth.apply(xr @ up.t())
    a = RoundBoth.apply(torch.nn.functional.silu(h[:, : c.I]) * h[:, c.I:])
    return RoundBoth.apply(a @ down.t())


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("-v", action="store_true")
    a = ap.parse_args()
    limit = G.BOUNDS["bf16"] / 1.5
    tally = H.Tally()
    worst = {}
    for idx, (group, name, config, T, opts) in enumerate(P.build_cases()):
        if config.get("moe_router") == "relu":
            continue
        case = R.random_case(config, T, 1 + idx, include_gate_map=opts.get("include_gate_map"),
                             weight_dtype=opts.get("weight_dtype", "F32"), router_scale=opts.get("router_scale", 1.0),
                             grad_y=opts.get("grad_y", True), grad_rl=opts.get("grad_rl", True))
        c, W, inp = case["cfg"], case["weights"], dict(case["inputs"])
        for r in opts.get("zero_rows", []):
            inp["x"] = inp["x"].copy()
            inp["x"][r] = 0.0
        args = (c, W, inp["x"], inp.get("gate_residual"), inp.get("grad_y"), inp.get("grad_router_logits"))
        try:
            R._expert_out = FP32_EXPERT_OUT
            ref, gref, _ = R.loss_and_grads(*args)
            R._expert_out = bf16_expert_out
            got, ggot, _ = R.loss_and_grads(*args)
        finally:
            R._expert_out = FP32_EXPERT_OUT
        b, x = {**ref, **gref}, {**got, **ggot}
        problems, case_worst = [], (0.0, "")
        for k in b:
            if k in P.INT_OUTPUTS:
                if not np.array_equal(x[k], b[k]):
                    problems.append(f"{k} changed")
                continue
            if b[k].size == 0:
                continue
            rel = float(np.abs(x[k].astype(np.float64) - b[k]).max()) / max(1.0, float(np.abs(b[k]).max()))
            kind = k if not k.startswith("grad.experts.experts.") else "grad.experts.*." + k.split(".")[-2]
            worst[kind] = max(worst.get(kind, 0.0), rel)
            case_worst = max(case_worst, (rel, k))
            if rel > limit:
                problems.append(f"{k}: {rel:.3g} > {limit:.3g}")
        tally.record(f"{group}/{name}", not problems, "; ".join(problems) or f"worst {case_worst[0]:.2e} ({case_worst[1]})",
                     verbose=a.v)
    print(f"worst emulated BF16 error per tensor kind (limit {limit:.3g}, bound {G.BOUNDS['bf16']:g}):")
    for k, v in sorted(worst.items(), key=lambda kv: -kv[1])[:8]:
        print(f"  {k:40s} {v:.2e}")
    return tally.finish()


if __name__ == "__main__":
    sys.exit(main())
