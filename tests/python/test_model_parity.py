#!/usr/bin/python3
"""Parity of the C++ `moepp dump` (whole model: forward, CE, aux losses, backward) against the
independent PyTorch reference (model_ref.py, autograd for the gradients).

Run: /usr/bin/python3 tests/python/test_model_parity.py --moepp /path/to/moepp [-k SUBSTRING] [-v]

For every case: random small models (V=97, D=32, 2-3 blocks, 4 heads, with and without grouped KV
heads, moepp and topk routers, T up to 70 so the 64-row attention tiles are partial) are written as a
checkpoint directory (config.json + model.safetensors, or BF16 shards with
model.safetensors.index.json), then
    moepp dump --model DIR --tokens ... [--targets ...] [--training] [--batch B] --out O.safetensors
The reference runs in float64 on the same (float32 or bf16-rounded) weights.

Comparison bound (per tensor): max|cpp - ref| <= 1e-4 * max(1, max|ref|). The C++ side is fp32 through
a deep graph (embedding -> 2-3 blocks of attention and MoE++ -> head -> CE and back); observed errors
are around 1e-6 (the report prints the worst relative error per case).
The set of outputs must be exactly logits, router_logits.{i}, and with targets loss, aux_loss and
grad.<name> for every parameter the C++ model holds (layer 0's gate_map included, whose gradient is 0).
Cases are drawn without near-ties in any block's top-k selection (the seed is re-drawn when two of the
first K+1 sorted routing scores are within 2e-5), so both sides select the same experts.
Prints one line per case and a final line `N passed, M failed`; exit 1 on failure.
"""
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import helpers as H  # noqa: E402
import model_ref as M  # noqa: E402
import safetensors_np as st  # noqa: E402

TOL = 1e-4
MARGIN = 2e-5


class Failure(Exception):
    pass


def model_cfg(V=97, D=32, L=2, H=4, KVH=None, I=48, E=8, **kw):
    c = {"architectures": ["MoeForCausalLM"], "model_type": "MoE++", "vocab_size": V, "hidden_size": D,
         "intermediate_size": I, "num_hidden_layers": L, "num_attention_heads": H,
         "max_position_embeddings": 128, "num_experts": [E], "rms_norm_eps": 1e-6, "rope_theta": 10000.0,
         "hidden_act": "silu", "tie_word_embeddings": False,
         # The 7B checkpoint's router flags spelled out (the released config class's defaults differ).
         "moe_2layer_gate": False, "moe_use_logits_norm": True, "moe_feature_no_mul_topk": True}
    if KVH is not None:
        c["num_key_value_heads"] = KVH
    c.update(kw)
    return c


def build_cases():
    """(name, config, B, T, options)."""
    C = []
    add = lambda n, c, B, T, **o: C.append((n, c, B, T, o))  # noqa: E731
    add("moepp_mha_T70_inference", model_cfg(), 1, 70)
    add("moepp_mha_T70_training", model_cfg(), 1, 70, training=True)
    add("moepp_gqa2_L3_T65_training", model_cfg(L=3, KVH=2), 1, 65, training=True)
    add("moepp_gqa2_L3_T64_inference", model_cfg(L=3, KVH=2), 1, 64)
    add("moepp_mqa1_T33", model_cfg(KVH=1, moe_aux_loss_coef=1.0), 1, 33, training=True)
    add("moepp_batch2_T35_training", model_cfg(KVH=2, moe_aux_loss_coef=0.5), 2, 35, training=True)
    add("moepp_batch3_T23_inference", model_cfg(L=3), 3, 23)
    add("moepp_T1", model_cfg(), 1, 1, training=True)
    add("moepp_ignored_targets", model_cfg(KVH=2), 1, 50, training=True, ignore=[0, 7, 8, 49])
    add("moepp_capacity_drops", model_cfg(moe_capacity_factor=0.6), 1, 60, training=True)
    add("moepp_zc_1_1_6_E12_tau0.25", model_cfg(E=12, n_zero_experts=1, n_copy_experts=1, n_constant_experts=6,
                                                 moe_tau=0.25, moe_aux_loss_coef=0.1), 1, 40, training=True)
    add("moepp_mixtral_K3", model_cfg(moe_use_mixtral_gating=True, moe_top_k=3), 1, 40, training=True)
    # Mixtral gating with moe_feature_no_mul_topk false: the released MOELayer does not scale the input.
    add("moepp_mixtral_mulK_unscaled", model_cfg(moe_use_mixtral_gating=True, moe_feature_no_mul_topk=False), 1, 40,
        training=True)
    add("topk_mixtral_mulK_unscaled_K3", model_cfg(E=6, moe_router="topk", moe_use_mixtral_gating=True,
                                                   moe_feature_no_mul_topk=False, moe_top_k=3), 1, 40)
    add("moepp_mulK_scaled", model_cfg(moe_feature_no_mul_topk=False), 1, 40, training=True)
    # Only the required keys: every router key takes the released config class's default.
    released = model_cfg()
    for k in ("moe_2layer_gate", "moe_use_logits_norm", "moe_feature_no_mul_topk"):
        del released[k]
    add("moepp_released_defaults", released, 1, 40, training=True)
    add("moepp_layer0_gate_map_absent", model_cfg(), 1, 30, layer0_gate_map=False)
    add("moepp_forward_only", model_cfg(L=3, KVH=2), 1, 70, no_targets=True)
    add("moepp_D48_H6_hd8_theta500", model_cfg(D=48, H=6, KVH=3, rope_theta=500.0, rms_norm_eps=1e-5), 1, 45,
        training=True)
    add("topk_mha_T70_training", model_cfg(E=6, moe_router="topk", moe_aux_loss_coef=0.1), 1, 70, training=True)
    add("topk_gqa2_L3_T66_inference", model_cfg(L=3, KVH=2, E=6, moe_router="topk"), 1, 66)
    add("topk_gating_residual_K1", model_cfg(E=5, moe_router="topk", moe_gating_residual=True, moe_top_k=1), 1, 40,
        training=True)
    add("moepp_bf16_sharded", model_cfg(L=3, KVH=2), 1, 48, training=True, weight_dtype="BF16", shards=3)
    add("moepp_f16_single", model_cfg(), 1, 40, weight_dtype="F16")
    return C


def draw_case(config, B, T, opts, seed):
    """Weights, tokens and targets whose routing has no near-ties (re-draws the seed)."""
    m = M.resolve(config)
    for attempt in range(60):
        s = seed * 1000 + attempt
        W = M.make_weights(config, s, layer0_gate_map=opts.get("layer0_gate_map", True))
        wd = opts.get("weight_dtype", "F32")
        if wd == "BF16":
            W = {k: st.round_to_bf16(v) for k, v in W.items()}
        elif wd == "F16":
            W = {k: v.astype(np.float16).astype(np.float32) for k, v in W.items()}
        rng = np.random.default_rng(s + 17)
        tokens = rng.integers(0, m["V"], size=B * T).astype(np.int32)
        targets = None
        if not opts.get("no_targets"):
            targets = rng.integers(0, m["V"], size=B * T).astype(np.int32)
            for i in opts.get("ignore", []):
                targets[i] = -1
        ref, grads, (margin, min_std) = M.loss_and_grads(config, W, tokens, targets, B, opts.get("training", False))
        if margin >= MARGIN and min_std > 1e-3:
            return W, tokens, targets, ref, grads
    raise RuntimeError("no tie-free case found")


def run_case(exe, tmp, name, config, B, T, opts, seed):
    W, tokens, targets, ref, grads = draw_case(config, B, T, opts, seed)
    d = os.path.join(tmp, name)
    H.write_checkpoint(d, config, W, opts.get("weight_dtype", "F32"), opts.get("shards", 1))
    out_path = os.path.join(tmp, name + ".out.safetensors")
    cmd = [exe, "dump", "--model", d, "--tokens", ",".join(map(str, tokens.tolist())), "--out", out_path]
    if targets is not None:
        cmd += ["--targets", ",".join(map(str, targets.tolist()))]
    if opts.get("training"):
        cmd.append("--training")
    if B != 1:
        cmd += ["--batch", str(B)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    if proc.returncode != 0:
        raise Failure(f"moepp exited {proc.returncode}: {proc.stderr.strip()[:800]}")
    out = st.load(out_path)
    hdr = st.header_of(out_path)
    want = dict(ref)
    want.update(grads)
    if targets is not None and not opts.get("layer0_gate_map", True):
        # The C++ model holds layer 0's gate_map (zero, unused) even when the checkpoint omits it.
        c0 = M.layer_cfg(config, 0, False)
        if c0.gating_residual:
            want["grad.model.layers.0.mlp.moe.gate.gate_map.weight"] = np.zeros((c0.E, c0.E))
    problems = []
    missing, extra = set(want) - set(out), set(out) - set(want)
    if missing:
        problems.append(f"missing outputs {sorted(missing)[:5]}")
    if extra:
        problems.append(f"unexpected outputs {sorted(extra)[:5]}")
    worst, worst_name = 0.0, ""
    worst_grad = 0.0  # max over gradients of max|diff| / max|ref| (a stricter, informational measure)
    for k in sorted(set(want) & set(out)):
        a, b = out[k].astype(np.float64), np.asarray(want[k], dtype=np.float64)
        if hdr[k]["dtype"] != "F32":
            problems.append(f"{k}: dtype {hdr[k]['dtype']}")
        if a.shape != b.shape:
            problems.append(f"{k}: shape {a.shape} != ref {b.shape}")
            continue
        if not np.all(np.isfinite(a)):
            problems.append(f"{k}: non-finite values")
            continue
        scale = max(1.0, float(np.abs(b).max())) if b.size else 1.0
        err = float(np.abs(a - b).max()) if b.size else 0.0
        if err / scale > worst:
            worst, worst_name = err / scale, k
        if k.startswith("grad.") and float(np.abs(b).max()) > 0:
            worst_grad = max(worst_grad, err / float(np.abs(b).max()))
        if err > TOL * scale:
            i = np.unravel_index(int(np.argmax(np.abs(a - b))), a.shape)
            problems.append(f"{k}: max|diff| {err:.3g} > {TOL:g}*{scale:.3g} at {list(i)} "
                            f"(cpp {float(a[i]):.7g} ref {float(b[i]):.7g})")
    if problems:
        more = f"; ... and {len(problems) - 4} more" if len(problems) > 4 else ""
        raise Failure("; ".join(problems[:4]) + more)
    note = ""
    if "loss" in ref:
        note = f"loss={float(ref['loss'][0]):.4f} aux={float(ref['aux_loss'][0]):.4f} grad rel {worst_grad:.1e}"
    return worst, worst_name, note


def run_error_cases(exe, tmp):
    """CLI faults: a clear message and exit 1."""
    config = model_cfg()
    W = M.make_weights(config, 5)
    d = os.path.join(tmp, "err_model")
    H.write_checkpoint(d, config, W, "F32", 1)
    o = os.path.join(tmp, "err.out.safetensors")
    cases = [
        ("token_outside_vocab", ["--tokens", "1,2,97"], "token id 97 at position 2"),
        ("targets_length", ["--tokens", "1,2,3", "--targets", "2,3"], "--targets has 2 ids"),
        ("tokens_not_integers", ["--tokens", "1,x,3"], "'x' is not an integer"),
        ("batch_not_dividing", ["--tokens", "1,2,3", "--batch", "2"], "--batch 2"),
    ]
    results = []
    for name, args, needle in cases:
        proc = subprocess.run([exe, "dump", "--model", d, "--out", o] + args, capture_output=True, text=True,
                              timeout=60)
        ok = proc.returncode == 1 and needle in proc.stderr
        results.append((name, ok, proc.stderr.strip()[:300]))
    os.remove(os.path.join(d, "model.safetensors"))
    W.pop("model.layers.1.self_attn.v_proj.weight")
    H.write_checkpoint(d, config, W, "F32", 1)
    proc = subprocess.run([exe, "dump", "--model", d, "--out", o, "--tokens", "1,2"], capture_output=True, text=True,
                          timeout=60)
    results.append(("missing_tensor", proc.returncode == 1 and
                    "missing tensor 'model.layers.1.self_attn.v_proj.weight'" in proc.stderr, proc.stderr.strip()))
    return results


def main():
    args, exe = H.parse_test_args()
    tally = H.Tally(print_run_time=True)
    with tempfile.TemporaryDirectory(prefix="moepp_model_parity_") as tmp:
        for idx, (name, config, B, T, opts) in enumerate(build_cases()):
            if args.k and args.k not in name:
                continue
            t0 = time.time()
            try:
                worst, worst_name, note = run_case(exe, tmp, name, config, B, T, opts, seed=idx + 1)
                tally.ok(f"{name:34s} B={B} T={T:3d} worst rel err {worst:.2e} ({worst_name}) {note} "
                         f"[{time.time() - t0:.1f}s]")
            except Failure as e:
                tally.fail(f"{name}: {e}")
        if not args.k or "error" in args.k:
            for name, ok, msg in run_error_cases(exe, tmp):
                tally.record(f"error_{name}", ok, msg, args.v)
    return tally.finish()


if __name__ == "__main__":
    sys.exit(main())
