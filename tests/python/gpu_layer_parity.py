#!/usr/bin/env python3
"""Parity of the GPU layer (moepp_gpu_layer, src/gpu/) against the independent PyTorch reference
(moepp_ref.py) run on the same GPU, with the golden I/O files of `moepp layer` (docs/layer.md).

Run: python3 tests/python/gpu_layer_parity.py --driver build/moepp_gpu_layer [-k SUBSTRING] [-v]

1. Always (also without a GPU): the driver's input errors: a relu config, a missing weight tensor, an
   unknown --precision and an unknown --gemm each exit 1 with a message naming the fault, before any
   device is touched.
2. With a GPU (the driver's --devices reports one and torch.cuda.is_available()): every non-relu case
   of test_layer_parity.py's build_cases(), in F32 with both expert-GEMM modes and in BF16 with the
   per-expert mode (one driver process a case: --modes), against moepp_ref.loss_and_grads on device "cuda" (fp32, TF32 off) of
       L = sum(y * grad_y) + sum(router_logits * grad_router_logits) + aux_loss (training).
   Bounds per float tensor: max|gpu - ref| <= B * max(1, max|ref|), B = 1e-5 (F32) or 3e-2 (BF16: the
   experts' inputs, weights and activations are rounded to BF16, unit roundoff 2^-8, about eight
   roundings on a path; docs/gpu.md); integer outputs (topk_ids, slot_kept) and aux_loss's presence
   exactly; the output names exactly those of docs/layer.md.
   Without a GPU this step prints "no GPU: skipped (...)" (CTest reports the test as skipped).
Prints a PASS / FAIL line per case and `N passed, M failed`; exit 1 on any failure.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import helpers as H  # noqa: E402
import moepp_ref as R  # noqa: E402
import safetensors_np as st  # noqa: E402
import test_layer_parity as P  # noqa: E402

BOUNDS = {"f32": 1e-5, "bf16": 3e-2}
MODES = [("f32", "per-expert"), ("f32", "grouped"), ("bf16", "per-expert")]


class Failure(Exception):
    pass


def write_case(d, config, T, opts, seed):
    case = R.random_case(config, T, seed, include_gate_map=opts.get("include_gate_map"),
                         weight_dtype=opts.get("weight_dtype", "F32"), router_scale=opts.get("router_scale", 1.0),
                         grad_y=opts.get("grad_y", True), grad_rl=opts.get("grad_rl", True))
    inp = dict(case["inputs"])
    for r in opts.get("zero_rows", []):
        inp["x"] = inp["x"].copy()
        inp["x"][r] = 0.0
    if opts.get("zero_grads"):
        inp["grad_y"] = np.zeros_like(inp["grad_y"])
        if "grad_router_logits" in inp:
            inp["grad_router_logits"] = np.zeros_like(inp["grad_router_logits"])
    os.makedirs(d, exist_ok=True)
    paths = [os.path.join(d, f) for f in ("C.json", "W.safetensors", "I.safetensors")]
    with open(paths[0], "w") as f:
        json.dump(config, f)
    st.save(paths[1], case["weights"], dtypes={k: case["weight_dtype"] for k in case["weights"]})
    st.save(paths[2], inp)
    return case, inp, paths


def run_driver(driver, args):
    return subprocess.run([driver] + args, capture_output=True, text=True, timeout=300)


def error_checks(driver, tmp, tally):
    """The driver's input errors (no GPU needed)."""
    relu = P.cfg(moe_router="relu")
    _, _, (c, w, i) = write_case(os.path.join(tmp, "err_relu"), relu, 4, {}, 1)
    base = P.cfg()
    _, _, (bc, bw, bi) = write_case(os.path.join(tmp, "err_base"), base, 4, {}, 2)
    W = st.load(bw)
    W.pop("gate.wg.weight")
    missing = os.path.join(tmp, "err_base", "W_missing.safetensors")
    st.save(missing, W)
    out = os.path.join(tmp, "err_out.safetensors")
    checks = [
        ("relu_router_refused", ["--config", c, "--weights", w, "--inputs", i, "--out", out],
         "does not implement the relu router"),
        ("missing_weight", ["--config", bc, "--weights", missing, "--inputs", bi, "--out", out],
         "missing tensor 'gate.wg.weight'"),
        ("unknown_precision", ["--config", bc, "--weights", bw, "--inputs", bi, "--out", out, "--precision", "fp8"],
         "unknown precision 'fp8'"),
        ("unknown_gemm_mode", ["--config", bc, "--weights", bw, "--inputs", bi, "--out", out, "--gemm", "batched"],
         "unknown expert GEMM mode 'batched'"),
        ("unknown_argument", ["--config", bc, "--bogus"], "unknown argument '--bogus'"),
    ]
    for name, args, want in checks:
        p = run_driver(driver, args)
        ok = p.returncode == 1 and want in p.stderr and not os.path.exists(out)
        tally.record(f"errors/{name}", ok, f"exit {p.returncode}, stderr: {p.stderr.strip()[:300]}")


def compare(c, out, hdr, ref, want, bound):
    problems, worst = [], 0.0
    have = set(out)
    if want - have:
        problems.append(f"missing outputs {sorted(want - have)}")
    if have - want:
        problems.append(f"unexpected outputs {sorted(have - want)}")
    for k in sorted(want & have):
        a, b = out[k], ref[k]
        dt = hdr[k]["dtype"]
        if dt != ("I32" if k in P.INT_OUTPUTS else "F32"):
            problems.append(f"{k}: dtype {dt}")
        if a.shape != b.shape:
            problems.append(f"{k}: shape {a.shape} != ref {b.shape}")
            continue
        if k in P.INT_OUTPUTS:
            if not np.array_equal(a, b):
                problems.append(f"{k}: differs at {np.argwhere(a != b)[:4].tolist()}")
            continue
        if a.size == 0:
            continue
        if not np.all(np.isfinite(a)):
            problems.append(f"{k}: non-finite values")
            continue
        # The slot weights and router outputs are fp32 in both precisions (docs/gpu.md).
        b_k = BOUNDS["f32"] if k in ("router_logits", "topk_weights", "aux_loss") else bound
        scale = max(1.0, float(np.abs(b).max()))
        err = float(np.abs(a.astype(np.float64) - b.astype(np.float64)).max())
        worst = max(worst, err / scale)
        if err > b_k * scale:
            problems.append(f"{k}: max|diff| {err:.3g} > {b_k:g}*{scale:.3g}")
    return problems, worst


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--driver", required=True, help="the moepp_gpu_layer binary")
    ap.add_argument("-k", default="", help="run only the cases whose name contains this")
    ap.add_argument("-v", action="store_true")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory")
    a = ap.parse_args()
    driver = os.path.abspath(a.driver)
    if not os.path.exists(driver):
        print(f"driver not found: {driver}\n0 passed, 1 failed")
        return 1
    tally = H.Tally(print_run_time=True)
    tmp = tempfile.mkdtemp(prefix="moepp_gpu_parity_")
    try:
        error_checks(driver, tmp, tally)
        dev = json.loads(run_driver(driver, ["--devices"]).stdout or "{}")
        if not dev.get("devices") or not torch.cuda.is_available():
            why = dev.get("why") or "torch.cuda.is_available() is False"
            if tally.failed == 0:  # CTest reports a skip only when the checks that did run passed
                print(f"no GPU: skipped ({why}); the parity cases need one")
            else:
                print(f"no GPU ({why}); the parity cases did not run")
            return tally.finish()
        print(f"device: {dev.get('name')}, torch {torch.__version__}")
        torch.backends.cuda.matmul.allow_tf32 = False
        for idx, (group, name, config, T, opts) in enumerate(P.build_cases()):
            if config.get("moe_router") == "relu":
                continue
            full = f"{group}/{name}"
            if a.k and a.k not in full:
                continue
            d = os.path.join(tmp, f"{group}__{name}")
            try:
                case, inp, (pc, pw, pi) = write_case(d, config, T, opts, 1 + idx)
                c = case["cfg"]
                W = st.load(pw)
                ref, grads, _ = R.loss_and_grads(c, W, inp["x"], inp.get("gate_residual"), inp.get("grad_y"),
                                                 inp.get("grad_router_logits"), device="cuda")
                refall = {**ref, **grads}
                want = P.expected_outputs(c, "grad_y" in inp, list(W.keys()))
            except Exception as e:  # noqa: BLE001
                tally.fail(f"{full:48s} reference: {type(e).__name__}: {e}")
                continue
            po = os.path.join(d, "O.safetensors")
            p = run_driver(driver, ["--config", pc, "--weights", pw, "--inputs", pi, "--out", po,
                                    "--modes", ",".join(f"{prec}:{mode}" for prec, mode in MODES)])
            for prec, mode in MODES:
                label = f"{full:48s} {prec:4s} {mode:10s} T={T:<3d}"
                if p.returncode != 0:
                    tally.fail(f"{label} driver exit {p.returncode}: {p.stderr.strip()[:500]}")
                    continue
                out = os.path.join(d, f"O.{prec}.{mode}.safetensors")
                problems, worst = compare(c, st.load(out), st.header_of(out), refall, want, BOUNDS[prec])
                if problems:
                    tally.fail(f"{label} " + "; ".join(problems[:4]))
                else:
                    tally.ok(f"{label} worst rel err {worst:.2e}")
    finally:
        if a.keep:
            print(f"files kept in {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    return tally.finish()


if __name__ == "__main__":
    sys.exit(main())
