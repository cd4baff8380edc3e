#!/usr/bin/env python3
"""PyTorch eager baseline for `moepp bench layer --torch`: one MoE++ layer (or a vanilla top-k MoE layer
with --n-zero/--n-copy/--n-const 0) computed the way the authors' released PyTorch code computes it:

  router: fp32 linear (+ optional gating residual z_prev . Wmap^T), logits / unbiased std, softmax over
          all E experts, top-k, zero experts' weights forced to 0, renormalise;
  experts: a Python loop over ALL experts (FFN, constant, copy and zero alike); each gathers its tokens
          (torch.where on the top-k ids), computes its output, scales it by the gate and index_add_s it
          into y.

Expert order as in docs/layer.md: FFN experts, then constant, then copy, then zero experts (last).
--ffn-fraction steers the share of routing slots that reach FFN experts: x[:, 0] is set to 1 (a bias
feature) and the zero-computation experts' router weight in that column is found by bisection.
Prints one JSON line: {"impl": "torch_eager", ..., "fwd_ms", "fwd_bwd_ms", "ffn_slot_fraction"}.
fwd_ms is the inference forward (torch.no_grad); fwd_bwd_ms is forward + y.backward(grad_y) with every
parameter and x requiring grad. Times are the best of --reps after a warm-up on the CPU; with
--device cuda (the GPU baseline of scripts/gpu_check.sh) the median of --reps CUDA-event timings.
--dtype bf16 keeps the experts, x and y in bfloat16 and the router (wg, gate_map) in fp32, as the
released code runs its router (`self.wg(x.float())`).

Threads: Debian's torch 1.13 runs matmuls in OpenBLAS (pthread build, its own pool, all cores by
default; torch.set_num_threads does not change it) and everything else in ATen's OpenMP pool
(--threads). On the 2-core target the fastest setting is --threads 1 --blas-threads 2 (the defaults):
with --threads 2 the two pools compete for the cores (at T=4096, 768x2048, 8+4: forward 1.2-1.5x and
forward+backward 1.1-1.2x slower), and --blas-threads 1 leaves a core idle in the matmuls
(forward+backward 1.5-1.7x slower).

Run with Debian's interpreter: /usr/bin/python3 bench/torch_layer_eager.py --d 768 --i 2048 ...
"""

import argparse
import ctypes
import json
import os
import sys
import time

import torch
import torch.nn.functional as F


class FFNExpert(torch.nn.Module):
    """SwiGLU expert: down(silu(g) * u) with [g | u] = x . up_proj^T; up_proj [2I, D], down_proj [D, I]."""

    def __init__(self, d, i, std):
        super().__init__()
        self.up_proj = torch.nn.Linear(d, 2 * i, bias=False)
        self.down_proj = torch.nn.Linear(i, d, bias=False)
        torch.nn.init.normal_(self.up_proj.weight, std=std)
        torch.nn.init.normal_(self.down_proj.weight, std=std)

    def forward(self, x):
        g, u = self.up_proj(x).chunk(2, dim=-1)
        return self.down_proj(F.silu(g) * u)


class ConstantExpert(torch.nn.Module):
    """a = softmax(x . Wc^T) over 2 entries; out = a0 * x + a1 * v."""

    def __init__(self, d, std):
        super().__init__()
        self.wg = torch.nn.Linear(d, 2, bias=False)
        torch.nn.init.normal_(self.wg.weight, std=std)
        self.constant = torch.nn.Parameter(torch.randn(d))

    def forward(self, x):
        a = torch.softmax(self.wg(x), dim=-1)
        return a[:, 0:1] * x + a[:, 1:2] * self.constant


class CopyExpert(torch.nn.Module):
    def forward(self, x):
        return x


class ZeroExpert(torch.nn.Module):
    def forward(self, x):
        # As in the released code: a real zeros tensor that is scaled and index_add_ed like any output.
        return torch.zeros_like(x)


class EagerMoELayer(torch.nn.Module):
    def __init__(self, d, i, n_ffn, n_const, n_copy, n_zero, top_k, gate_residual, std=0.02):
        super().__init__()
        self.n_ffn, self.n_const, self.n_copy, self.n_zero = n_ffn, n_const, n_copy, n_zero
        self.num_experts = n_ffn + n_const + n_copy + n_zero
        self.top_k = top_k
        self.wg = torch.nn.Linear(d, self.num_experts, bias=False).float()
        torch.nn.init.normal_(self.wg.weight, std=std)
        self.gate_map = None
        if gate_residual:
            self.gate_map = torch.nn.Linear(self.num_experts, self.num_experts, bias=False)
            torch.nn.init.normal_(self.gate_map.weight, std=std)
        experts = [FFNExpert(d, i, std) for _ in range(n_ffn)]
        experts += [ConstantExpert(d, std) for _ in range(n_const)]
        experts += [CopyExpert() for _ in range(n_copy)]
        experts += [ZeroExpert() for _ in range(n_zero)]
        self.experts = torch.nn.ModuleList(experts)
        self.first_zero = self.num_experts - n_zero

    def route(self, x, z_prev=None):
        logits = self.wg(x.float())
        if self.gate_map is not None and z_prev is not None:
            logits = logits + self.gate_map(z_prev)
        std = logits.std(dim=1, keepdim=True)  # unbiased, like the released code
        probs = torch.softmax(logits / std, dim=1)
        gates, ids = torch.topk(probs, k=self.top_k, dim=1)
        if self.n_zero > 0:
            gates = torch.where(ids >= self.first_zero, torch.zeros_like(gates), gates)
        denom = gates.sum(dim=1, keepdim=True)
        gates = torch.where(denom > 0, gates / denom.clamp_min(1e-30), torch.zeros_like(gates))
        return gates, ids, logits

    def forward(self, x, z_prev=None):
        gates, ids, logits = self.route(x, z_prev)
        y = torch.zeros_like(x)
        for e, expert in enumerate(self.experts):
            token_ids, slot_ids = torch.where(ids == e)
            w = gates[token_ids, slot_ids].unsqueeze(-1)
            out = expert(x.index_select(0, token_ids))
            y.index_add_(0, token_ids, (out * w).to(y.dtype))
        return y, logits


def ffn_slot_fraction(layer, x):
    with torch.no_grad():
        _, ids, _ = layer.route(x)
        return (ids < layer.n_ffn).float().mean().item()


def steer_router(layer, x, target):
    """Set the zero-computation experts' weight on the bias feature x[:, 0] == 1 so that about `target`
    of the routing slots go to FFN experts. Returns the measured fraction."""
    n_zc = layer.num_experts - layer.n_ffn
    if n_zc == 0:
        return ffn_slot_fraction(layer, x)
    with torch.no_grad():
        x[:, 0] = 1.0
        col = layer.wg.weight[:, 0]

        def frac(b):
            col[layer.n_ffn:] = b
            return ffn_slot_fraction(layer, x)

        lo, hi = -200.0, 200.0  # frac(lo) ~ 1 (ZC experts never chosen), frac(hi) small
        if frac(lo) <= target:
            return frac(lo)
        if frac(hi) >= target:
            return frac(hi)
        for _ in range(50):
            mid = 0.5 * (lo + hi)
            if frac(mid) > target:
                lo = mid
            else:
                hi = mid
        f_lo, f_hi = frac(lo), frac(hi)
        b = lo if abs(f_lo - target) <= abs(f_hi - target) else hi
        return frac(b)


def set_blas_threads(n):
    """Debian's torch runs its matmuls in OpenBLAS (pthread build), whose pool torch.set_num_threads does
    not touch; set it directly. Returns the count OpenBLAS reports, or None if it is not loaded."""
    for name in ("libopenblas.so.0", "libopenblas.so"):
        try:
            lib = ctypes.CDLL(name)
        except OSError:
            continue
        if n is not None:
            lib.openblas_set_num_threads(ctypes.c_int(n))
        return int(lib.openblas_get_num_threads())
    return None


def median_cuda_ms(fn, reps, warmup):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b))
    times.sort()
    return times[len(times) // 2]


def best_ms(fn, reps, warmup):
    for _ in range(warmup):
        fn()
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best * 1e3


def main(argv=None):
    ap = argparse.ArgumentParser(description="PyTorch eager MoE++ layer timing, expert loop as in the "
                                             "authors' released code (see the module docstring)")
    ap.add_argument("--d", type=int, default=768)
    ap.add_argument("--i", type=int, default=2048)
    ap.add_argument("--n-ffn", type=int, default=8)
    ap.add_argument("--n-zero", type=int, default=1)
    ap.add_argument("--n-copy", type=int, default=1)
    ap.add_argument("--n-const", type=int, default=2)
    ap.add_argument("--top-k", type=int, default=2)
    ap.add_argument("--tokens", type=int, default=4096)
    ap.add_argument("--ffn-fraction", type=float, default=None,
                    help="target share of routing slots on FFN experts (default: unsteered router)")
    ap.add_argument("--gate-residual", action="store_true", help="add z_prev . Wmap^T to the logits")
    cores = len(os.sched_getaffinity(0))
    ap.add_argument("--threads", type=int, default=1,
                    help="torch.set_num_threads, ATen's OpenMP pool (default 1: fastest here, see above)")
    ap.add_argument("--blas-threads", type=int, default=cores,
                    help="OpenBLAS threads for torch's matmuls (default: all %d cores)" % cores)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--backward", action="store_true", help="also time forward + backward")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    ap.add_argument("--dtype", choices=("f32", "bf16"), default="f32",
                    help="experts, x and y in this type (the router stays fp32)")
    a = ap.parse_args(argv)

    if min(a.d, a.i, a.n_ffn, a.tokens, a.top_k, a.reps) < 1 or min(a.n_zero, a.n_copy, a.n_const, a.warmup) < 0:
        ap.error("sizes, counts, --reps must be >= 1; zero-computation counts and --warmup >= 0")
    e = a.n_ffn + a.n_zero + a.n_copy + a.n_const
    if a.top_k > e or e < 2:
        ap.error("need 2 <= E and top-k <= E (E = %d)" % e)
    if a.ffn_fraction is not None and not 0.0 <= a.ffn_fraction <= 1.0:
        ap.error("--ffn-fraction must be in [0, 1]")
    if a.threads < 1 or (a.blas_threads is not None and a.blas_threads < 1):
        ap.error("--threads and --blas-threads must be >= 1")

    cuda = a.device == "cuda"
    if cuda and not torch.cuda.is_available():
        ap.error("--device cuda: torch.cuda.is_available() is False")
    torch.set_num_threads(a.threads)
    blas_threads = None if cuda else set_blas_threads(a.blas_threads)
    torch.manual_seed(a.seed)
    dtype = torch.bfloat16 if a.dtype == "bf16" else torch.float32
    layer = EagerMoELayer(a.d, a.i, a.n_ffn, a.n_const, a.n_copy, a.n_zero, a.top_k, a.gate_residual)
    layer = layer.to(device=a.device, dtype=dtype)
    layer.wg.float()
    if layer.gate_map is not None:
        layer.gate_map.float()
    x = torch.randn(a.tokens, a.d, device=a.device).to(dtype)
    z_prev = torch.randn(a.tokens, e, device=a.device) if a.gate_residual else None
    timer = median_cuda_ms if cuda else best_ms
    if a.ffn_fraction is not None:
        measured = steer_router(layer, x, a.ffn_fraction)
    else:
        measured = ffn_slot_fraction(layer, x)

    def fwd():
        with torch.no_grad():
            layer(x, z_prev)

    fwd_ms = timer(fwd, a.reps, a.warmup)

    fwd_bwd_ms = None
    if a.backward:
        xg = x.clone().requires_grad_(True)
        grad_y = torch.randn(a.tokens, a.d, device=a.device).to(dtype)

        def fwd_bwd():
            for p in layer.parameters():
                p.grad = None
            xg.grad = None
            y, _ = layer(xg, z_prev)
            y.backward(grad_y)

        fwd_bwd_ms = timer(fwd_bwd, a.reps, a.warmup)

    rec = {
        "impl": "torch_eager", "torch": torch.__version__, "threads": torch.get_num_threads(),
        "blas_threads": blas_threads,
        "d": a.d, "i": a.i, "n_ffn": a.n_ffn, "n_zero": a.n_zero, "n_copy": a.n_copy, "n_const": a.n_const,
        "top_k": a.top_k, "tokens": a.tokens, "gate_residual": a.gate_residual, "reps": a.reps,
        "device": a.device, "dtype": a.dtype, "timing": "median, CUDA events" if cuda else "best of reps",
        "gpu": torch.cuda.get_device_name(0) if cuda else None,
        "ffn_fraction_target": a.ffn_fraction, "ffn_slot_fraction": round(measured, 4),
        "fwd_ms": round(fwd_ms, 3), "fwd_bwd_ms": None if fwd_bwd_ms is None else round(fwd_bwd_ms, 3),
    }
    print(json.dumps(rec))
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
