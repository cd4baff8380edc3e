#!/usr/bin/python3
"""Parity of the C++ `moepp layer` against the independent PyTorch reference (moepp_ref.py).

Run: /usr/bin/python3 tests/python/test_layer_parity.py --moepp /path/to/moepp [-k SUBSTRING] [-v]

For every case: write C.json, W.safetensors, I.safetensors (x, gate_residual when the gating residual
is used, grad_y, optionally grad_router_logits) into a temporary directory, run
    moepp layer --config C.json --weights W.safetensors --inputs I.safetensors --out O.safetensors
and compare every output of O against the reference, with the reference's gradients from torch
autograd of  L = sum(y * grad_y) + sum(router_logits * grad_router_logits) + aux_loss (training).

Comparison bound (per tensor):
    integer tensors (topk_ids, slot_kept): exactly equal;
    float tensors: max|cpp - ref| <= 1e-5 * max(1, max|ref|).
The set of output names must be exactly the one docs/layer.md lists (no missing, no extra tensors),
with dtypes I32 for ids/slot_kept and F32 for the rest.
Properties checked on the C++ outputs as well: with the moepp router (not mixtral) a zero expert's
weight is exactly 0 and, when a token's top-2 holds one zero expert, its partner's weight is exactly
1.0; slot_kept equals an admission recomputed here from the C++ ids and the doc's capacities (rank,
then token); inference keeps every slot.
Cases are drawn without near-ties in the selection (random_case re-draws the seed when any of the
first K+1 sorted scores are within 1e-4), so both sides must select the same experts. The "ties"
group adds all-zero tokens (exactly equal scores) and assumes ties go to the lower expert id, a rule
docs/layer.md does not state (the C++ side and the reference both use it).
Prints the worst relative error per case and a final line `N passed, M failed`; exit 1 on failure.
"""
import json
import os
import subprocess
import sys
import tempfile

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import helpers as H  # noqa: E402
import moepp_ref as R  # noqa: E402
import safetensors_np as st  # noqa: E402

TOL = 1e-5
INT_OUTPUTS = ("topk_ids", "slot_kept")


def cfg(D=32, I=48, E=8, **kw):
    """A layer config with the 7B checkpoint's router flags spelled out (the released config class's
    defaults differ: see released_cfg)."""
    c = {"hidden_size": D, "intermediate_size": I, "num_experts": [E], "moe_2layer_gate": False,
         "moe_use_logits_norm": True, "moe_feature_no_mul_topk": True}
    c.update(kw)
    return c


def released_cfg(D=32, I=48, E=8, **kw):
    """Only the required keys plus `kw`: every missing router key takes the released default."""
    c = {"hidden_size": D, "intermediate_size": I, "num_experts": [E]}
    c.update(kw)
    return c


def build_cases():
    """(group, name, config, T, options)."""
    C = []
    add = lambda g, n, c, T, **o: C.append((g, n, c, T, o))  # noqa: E731
    # --- moepp router (default 1 zero / 1 copy / 2 constant) ---
    add("moepp", "default_T16", cfg(), 16)
    add("moepp", "T1", cfg(), 1)
    add("moepp", "T2_E12_idle_experts", cfg(E=12), 2)
    add("moepp", "K1", cfg(moe_top_k=1), 16)
    add("moepp", "K3", cfg(moe_top_k=3), 16)
    add("moepp", "zc_1_1_6", cfg(E=12, n_zero_experts=1, n_copy_experts=1, n_constant_experts=6), 24)
    add("moepp", "zc_2_0_1_K3", cfg(E=7, n_zero_experts=2, n_copy_experts=0, n_constant_experts=1, moe_top_k=3), 20)
    add("moepp", "zc_2_0_1_K2", cfg(E=7, n_zero_experts=2, n_copy_experts=0, n_constant_experts=1), 20,
        router_scale=2.0)
    add("moepp", "zc_3_0_0_all_zero_tokens", cfg(E=5, n_zero_experts=3, n_copy_experts=0, n_constant_experts=0,
                                                 layer_index=1), 32)
    add("moepp", "zc_0_1_0", cfg(E=5, n_zero_experts=0, n_copy_experts=1, n_constant_experts=0), 12)
    add("moepp", "zc_0_0_0", cfg(E=4, n_zero_experts=0, n_copy_experts=0, n_constant_experts=0), 12)
    add("moepp", "num_experts_int", dict(cfg(), num_experts=8), 8)
    add("moepp", "2layer_gate", cfg(moe_2layer_gate=True), 16)
    add("moepp", "no_logits_norm", cfg(moe_use_logits_norm=False), 16)
    add("moepp", "gate_norm_std_2.5", cfg(moe_gate_norm_std=2.5), 16)
    add("moepp", "gate_norm_std_0.3_2layer", cfg(moe_gate_norm_std=0.3, moe_2layer_gate=True), 16)
    add("moepp", "mixtral", cfg(moe_use_mixtral_gating=True), 16)
    add("moepp", "mixtral_K3_nonorm", cfg(moe_use_mixtral_gating=True, moe_top_k=3, moe_use_logits_norm=False), 16)
    add("moepp", "mulK_K2", cfg(moe_feature_no_mul_topk=False), 16)
    add("moepp", "mulK_K3", cfg(moe_feature_no_mul_topk=False, moe_top_k=3), 16)
    add("moepp", "residual_layer1", cfg(layer_index=1), 16)
    add("moepp", "residual_layer3_2layer_mixtral", cfg(layer_index=3, moe_2layer_gate=True,
                                                      moe_use_mixtral_gating=True), 16)
    add("moepp", "residual_layer0_no_map", cfg(layer_index=0), 16)
    add("moepp", "residual_layer0_map_ignored", cfg(layer_index=0), 16, include_gate_map=True)
    add("moepp", "residual_off_layer1", cfg(layer_index=1, moe_gating_residual=False), 16)
    add("moepp", "forward_only", cfg(layer_index=1), 16, grad_y=False)
    add("moepp", "grad_y_without_grad_rl", cfg(layer_index=1), 16, grad_rl=False)
    add("moepp", "bf16_weights", cfg(layer_index=1), 16, weight_dtype="BF16")
    add("moepp", "f16_weights", cfg(), 16, weight_dtype="F16")
    add("moepp", "large_D64_I96_T64", cfg(D=64, I=96, E=12, layer_index=1), 64)
    add("moepp", "odd_shapes_D37_I53_T29", cfg(D=37, I=53, E=9, layer_index=1, moe_top_k=3), 29)
    add("moepp", "E40_2B_layout_1_1_6_T64", cfg(D=24, I=20, E=40, n_zero_experts=1, n_copy_experts=1,
                                               n_constant_experts=6, layer_index=2), 64)
    add("moepp", "extra_hf_keys_ignored", cfg(model_type="MoE++", vocab_size=65536, rms_norm_eps=1e-6,
                                              hidden_act="silu", architectures=["MoeForCausalLM"]), 8)
    # --- moepp training: balance loss, capacity ---
    add("moepp_train", "train_dropless", cfg(training=True), 16)
    add("moepp_train", "train_aux_only", cfg(training=True, moe_aux_loss_coef=100.0), 16, zero_grads=True)
    add("moepp_train", "train_tau0.25_aux_only", cfg(training=True, moe_tau=0.25, moe_aux_loss_coef=100.0,
                                                     layer_index=1), 16, zero_grads=True)
    add("moepp_train", "train_cap0.5", cfg(training=True, moe_capacity_factor=0.5), 32, expect_drops=True)
    add("moepp_train", "train_cap1.0", cfg(training=True, moe_capacity_factor=1.0), 32, expect_drops=True)
    add("moepp_train", "train_cap1.0_1_1_6", cfg(E=12, n_zero_experts=1, n_copy_experts=1, n_constant_experts=6,
                                                 training=True, moe_capacity_factor=1.0), 40, expect_drops=True)
    add("moepp_train", "train_cap0.5_K3_mixtral", cfg(training=True, moe_capacity_factor=0.5, moe_top_k=3,
                                                      moe_use_mixtral_gating=True, moe_aux_loss_coef=1.0),
        24, expect_drops=True)
    add("moepp_train", "train_cap0.7_mulK_residual", cfg(training=True, moe_capacity_factor=0.7, layer_index=1,
                                                         moe_feature_no_mul_topk=False), 24, expect_drops=True)
    # gamma = 1.1 (the paper's value) where gamma*tau*S/(tau*N_FFN+N_ZC) = 11 and gamma*S/(...) = 22 exactly:
    # ceil must give 11 / 22 (the JSON number 1.1 read as a double gives exactly that; 1.1f gives 12 / 23).
    add("moepp_train", "train_cap1.1_exact_integer_capacity", cfg(training=True, moe_capacity_factor=1.1,
                                                                  moe_tau=0.5), 60, expect_drops=True)
    add("moepp_train", "train_cap0.5_T1", cfg(training=True, moe_capacity_factor=0.5), 1)
    add("moepp_train", "inference_ignores_capacity", cfg(training=False, moe_capacity_factor=0.5), 16)
    add("moepp_train", "train_mixtral_aux_only", cfg(training=True, moe_use_mixtral_gating=True,
                                                     moe_aux_loss_coef=100.0), 16, zero_grads=True)
    # --- topk (vanilla softmax top-k) ---
    add("topk", "topk_default", cfg(moe_router="topk"), 16)
    add("topk", "topk_K1", cfg(moe_router="topk", moe_top_k=1), 16)
    add("topk", "topk_K3_T2", cfg(moe_router="topk", moe_top_k=3, E=10), 2)
    add("topk", "topk_mixtral", cfg(moe_router="topk", moe_use_mixtral_gating=True), 16)
    add("topk", "topk_2layer_nonorm", cfg(moe_router="topk", moe_2layer_gate=True, moe_use_logits_norm=False), 16)
    add("topk", "topk_train", cfg(moe_router="topk", training=True, moe_aux_loss_coef=1.0), 16)
    add("topk", "topk_train_cap0.5", cfg(moe_router="topk", training=True, moe_capacity_factor=0.5), 32,
        expect_drops=True)
    add("topk", "topk_train_cap1.0", cfg(moe_router="topk", training=True, moe_capacity_factor=1.0), 32,
        expect_drops=True)
    add("topk", "topk_odd_D61_I95_T63_train_cap", cfg(moe_router="topk", D=61, I=95, E=6, training=True,
                                                      moe_capacity_factor=0.9, moe_aux_loss_coef=1.0), 63,
        expect_drops=True)
    # gamma*S/E = 1.1*80/8 = 11 exactly (double arithmetic also gives 11.0): capacity 11, not 12.
    add("topk", "topk_train_cap1.1_exact_integer_capacity", cfg(moe_router="topk", training=True,
                                                               moe_capacity_factor=1.1), 40, expect_drops=True)
    add("topk", "topk_residual_layer1", cfg(moe_router="topk", moe_gating_residual=True, layer_index=1), 16)
    # --- adamoe (null experts) ---
    add("adamoe", "adamoe_2null_K3", cfg(moe_router="adamoe", n_zero_experts=2, moe_top_k=3, E=8), 16)
    add("adamoe", "adamoe_3null_K3_T1", cfg(moe_router="adamoe", n_zero_experts=3, moe_top_k=3, E=9), 1)
    add("adamoe", "adamoe_4null_K3", cfg(moe_router="adamoe", n_zero_experts=4, moe_top_k=3, E=8), 24,
        router_scale=2.0)
    add("adamoe", "adamoe_train", cfg(moe_router="adamoe", n_zero_experts=2, moe_top_k=3, training=True,
                                      moe_aux_loss_coef=1.0), 16)
    add("adamoe", "adamoe_train_aux_only", cfg(moe_router="adamoe", n_zero_experts=3, moe_top_k=3,
                                               training=True, moe_aux_loss_coef=100.0), 16, zero_grads=True)
    add("adamoe", "adamoe_train_cap0.6", cfg(moe_router="adamoe", n_zero_experts=2, moe_top_k=3, training=True,
                                             moe_capacity_factor=0.6), 32, expect_drops=True)
    add("adamoe", "adamoe_0null", cfg(moe_router="adamoe", moe_top_k=2, training=True), 16)
    # --- relu (ReMoE) ---
    add("relu", "relu_default", cfg(moe_router="relu"), 16)
    add("relu", "relu_T1", cfg(moe_router="relu"), 1)
    add("relu", "relu_train", cfg(moe_router="relu", training=True, moe_relu_l1_coef=0.5), 16)
    add("relu", "relu_train_aux_only", cfg(moe_router="relu", training=True, moe_relu_l1_coef=50.0, moe_top_k=3),
        16, zero_grads=True)
    add("relu", "relu_mulK_2layer", cfg(moe_router="relu", moe_feature_no_mul_topk=False, moe_2layer_gate=True), 16)
    add("relu", "relu_residual_layer2", cfg(moe_router="relu", moe_gating_residual=True, layer_index=2), 16)
    add("relu", "relu_norm_keys_ignored", cfg(moe_router="relu", moe_use_logits_norm=True, moe_gate_norm_std=3.0,
                                              moe_use_mixtral_gating=True), 16)
    # --- the four released router flags in every combination (released rule: K·x only when neither
    #     mixtral gating nor no_mul_topk), K = 2 and K = 3, layer 1 (gating residual), and a config
    #     with only the required keys (the released config class's defaults) ---
    add("released", "required_keys_only", released_cfg(), 16)
    add("released", "required_keys_only_layer1_train", released_cfg(layer_index=1, training=True), 16)
    for mix in (False, True):
        for nomul in (False, True):
            for norm in (False, True):
                for two in (False, True):
                    name = f"mixtral{int(mix)}_nomul{int(nomul)}_norm{int(norm)}_2layer{int(two)}"
                    flags = dict(moe_use_mixtral_gating=mix, moe_feature_no_mul_topk=nomul,
                                 moe_use_logits_norm=norm, moe_2layer_gate=two)
                    add("released", name, released_cfg(layer_index=1, **flags), 16)
                    add("released", name + "_K3_topk", released_cfg(moe_router="topk", moe_top_k=3, **flags), 12)
    # --- all-zero tokens: logits all 0 -> std = 0 -> s = 0 (doc), p uniform: an exact tie. The doc
    #     gives no tie rule; these cases assume ties go to the lower expert id (stable order). ---
    add("ties", "moepp_zero_tokens", cfg(), 8, zero_rows=[0, 5])
    add("ties", "moepp_zero_tokens_train_cap", cfg(training=True, moe_capacity_factor=0.7, moe_aux_loss_coef=1.0),
        16, zero_rows=[2, 3, 9])
    add("ties", "topk_mixtral_zero_tokens", cfg(moe_router="topk", moe_use_mixtral_gating=True), 8, zero_rows=[1])
    add("ties", "adamoe_zero_tokens", cfg(moe_router="adamoe", n_zero_experts=2, moe_top_k=3, E=8), 8,
        zero_rows=[4])
    add("ties", "relu_zero_token_uses_no_expert", cfg(moe_router="relu", training=True, moe_relu_l1_coef=0.5), 8,
        zero_rows=[3])
    return C


# ---------------------------------------------------------------------------------------------------


class Failure(Exception):
    pass


def expected_outputs(c, has_grad, weight_names):
    names = {"y", "router_logits", "topk_ids", "topk_weights", "slot_kept"}
    if c.training:
        names.add("aux_loss")
    if has_grad:
        names.add("grad.x")
        if c.uses_residual:
            names.add("grad.gate_residual")
        names.update("grad." + n for n in weight_names)
    return names


def check_properties(c, out, T, notes):
    ids, w, kept = out["topk_ids"], out["topk_weights"], out["slot_kept"]
    if c.router == "moepp" and not c.mixtral:
        zero_ids = [e for e in range(c.E) if c.is_zero(e)]
        mask = np.isin(ids, zero_ids)
        if mask.any() and not np.all(w[mask] == 0.0):
            raise Failure(f"property: zero-expert weight not exactly 0: {w[mask]}")
        if c.K == 2:
            one = mask.sum(1) == 1
            partner = w[one][~mask[one]]
            if partner.size and not np.all(partner == 1.0):
                raise Failure(f"property: partner of zero expert has weight != 1.0: {partner[partner != 1.0]}")
            notes.append(f"zero-partner tokens={int(one.sum())}")
    if c.router in ("moepp", "adamoe") and not c.mixtral and c.n_zero > 0:
        all_zero = int((w.sum(1) == 0).sum())
        if all_zero:
            notes.append(f"tokens-with-only-zero-experts={all_zero}")
    if c.router != "relu":
        if c.training and c.gamma is not None:
            want = R.admit(ids, R.capacities(c, T))
            if not np.array_equal(want, kept):
                raise Failure(f"property: slot_kept != admission recomputed from C++ ids\n{kept}\n{want}")
        elif not np.all(kept == 1):
            raise Failure("property: dropless run dropped slots")
    else:
        if not np.array_equal(kept, (ids >= 0).astype(np.int32)):
            raise Failure("property: relu slot_kept != (ids >= 0)")


def run_case(exe, tmp, group, name, config, T, opts, seed, verbose):
    case = R.random_case(config, T, seed, include_gate_map=opts.get("include_gate_map"),
                         weight_dtype=opts.get("weight_dtype", "F32"), router_scale=opts.get("router_scale", 1.0),
                         grad_y=opts.get("grad_y", True), grad_rl=opts.get("grad_rl", True))
    c = case["cfg"]
    inp = dict(case["inputs"])
    for r in opts.get("zero_rows", []):  # all-zero tokens: z = 0, std = 0, s = 0, exact ties
        inp["x"] = inp["x"].copy()
        inp["x"][r] = 0.0
    if opts.get("zero_grads"):
        inp["grad_y"] = np.zeros_like(inp["grad_y"])
        if "grad_router_logits" in inp:
            inp["grad_router_logits"] = np.zeros_like(inp["grad_router_logits"])
    d = os.path.join(tmp, f"{group}__{name}")
    os.makedirs(d, exist_ok=True)
    pc, pw, pi, po = (os.path.join(d, f) for f in ("C.json", "W.safetensors", "I.safetensors", "O.safetensors"))
    with open(pc, "w") as f:
        json.dump(config, f, indent=1)
    wd = case["weight_dtype"]
    st.save(pw, case["weights"], dtypes={k: wd for k in case["weights"]})
    st.save(pi, inp)
    W = st.load(pw)  # exactly what the C++ side reads (bf16/f16 already rounded)
    for k in W:
        assert np.array_equal(W[k], case["weights"][k]), k
    proc = subprocess.run([exe, "layer", "--config", pc, "--weights", pw, "--inputs", pi, "--out", po],
                          capture_output=True, text=True, timeout=120)
    if proc.returncode != 0:
        raise Failure(f"moepp exited {proc.returncode}: {proc.stderr.strip()[:800]}")
    out = st.load(po)
    hdr = st.header_of(po)
    ref, grads, _ = R.loss_and_grads(c, W, inp["x"], inp.get("gate_residual"), inp.get("grad_y"),
                                     inp.get("grad_router_logits"))
    refall = {**ref, **grads}
    want = expected_outputs(c, "grad_y" in inp, list(W.keys()))
    have = set(k for k in out)
    problems = []
    if want - have:
        problems.append(f"missing outputs {sorted(want - have)}")
    if have - want:
        problems.append(f"unexpected outputs {sorted(have - want)}")
    worst, worst_name = 0.0, ""
    for k in sorted(want & have, key=lambda n: (n not in INT_OUTPUTS, n)):  # ids/kept first
        a, b = out[k], refall[k]
        dt = hdr[k]["dtype"]
        if dt != ("I32" if k in INT_OUTPUTS else "F32"):
            problems.append(f"{k}: dtype {dt}")
        if a.shape != b.shape:
            problems.append(f"{k}: shape {a.shape} != ref {b.shape}")
            continue
        if k in INT_OUTPUTS:
            if not np.array_equal(a, b):
                if k == "slot_kept" and ref.get("topk_ids") is not None and c.router != "relu":
                    ids = out["topk_ids"]
                    kc = [int(((ids == e) & (a == 1)).sum()) for e in range(c.E)]
                    problems.append(f"slot_kept: kept per expert cpp {kc}, reference capacities "
                                    f"{R.capacities(c, T) if (c.training and c.gamma is not None) else None}")
                idx = np.argwhere(a != b)[:4].tolist()
                problems.append(f"{k}: differs at {idx}: cpp {[int(a[tuple(i)]) for i in idx]} "
                                f"ref {[int(b[tuple(i)]) for i in idx]}")
            continue
        if a.size == 0:
            continue
        if not np.all(np.isfinite(a)):
            problems.append(f"{k}: non-finite values")
            continue
        scale = max(1.0, float(np.abs(b).max()))
        err = float(np.abs(a.astype(np.float64) - b.astype(np.float64)).max())
        rel = err / scale
        if rel > worst:
            worst, worst_name = rel, k
        if err > TOL * scale:
            i = np.unravel_index(int(np.argmax(np.abs(a - b))), a.shape)
            problems.append(f"{k}: max|diff| {err:.3g} > {TOL:g}*{scale:.3g} at {list(i)} "
                            f"(cpp {float(a[i]):.7g} ref {float(b[i]):.7g})")
    notes = []
    if "slot_kept" in have and c.router != "relu":
        drops = int((out["slot_kept"] == 0).sum())
        notes.append(f"drops={drops}")
        if opts.get("expect_drops") and drops == 0:
            problems.append("case meant to drop slots dropped none")
    if "topk_ids" in have and c.router != "relu":
        used = len(set(out["topk_ids"].ravel().tolist()))
        notes.append(f"experts used {used}/{c.E}")
    if not problems:
        try:
            check_properties(c, out, T, notes)
        except Failure as e:
            problems.append(str(e))
    if problems:
        more = f"; ... and {len(problems) - 4} more" if len(problems) > 4 else ""
        raise Failure("; ".join(problems[:4]) + more)
    return worst, worst_name, notes


def main():
    args, exe = H.parse_test_args(
        add_options=lambda ap: ap.add_argument("--keep", action="store_true", help="keep the temporary directory"))
    if H.moepp_binary_missing(exe):
        return 1
    tally = H.Tally(print_run_time=True)
    tmp = tempfile.mkdtemp(prefix="moepp_parity_")
    try:
        for i, (group, name, config, T, opts) in enumerate(build_cases()):
            full = f"{group}/{name}"
            if args.k and args.k not in full:
                continue
            try:
                worst, wname, notes = run_case(exe, tmp, group, name, config, T, opts, 1 + i, args.v)
                tally.ok(f"{full:48s} T={T:<3d} worst rel err {worst:.2e} ({wname}) {' '.join(notes)}")
            except Failure as e:
                tally.fail(f"{full:48s} T={T:<3d} {e}")
            except Exception as e:  # noqa: BLE001  (reference or harness error: still a failure)
                tally.fail(f"{full:48s} T={T:<3d} {type(e).__name__}: {e}")
    finally:
        if args.keep:
            print(f"files kept in {tmp}")
        else:
            import shutil
            shutil.rmtree(tmp, ignore_errors=True)
    return tally.finish()


if __name__ == "__main__":
    sys.exit(main())
