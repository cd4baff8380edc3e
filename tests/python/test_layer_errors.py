#!/usr/bin/python3
"""Error handling of `moepp layer`: bad configs, weights and inputs must fail cleanly.

Run: /usr/bin/python3 tests/python/test_layer_errors.py --moepp /path/to/moepp [-v]

Each case starts from a valid case (moepp router, layer_index 1, so gate_residual is required), breaks
one thing, runs `moepp layer` and asserts: exit code != 0, not killed by a signal (no crash), and
stderr names the offending file, key or tensor (case-insensitive substring; any one of the listed
alternatives). A valid control case must exit 0. Final line: `N passed, M failed`.
"""
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import helpers as H  # noqa: E402
import moepp_ref as R  # noqa: E402
import safetensors_np as st  # noqa: E402

# The 7B checkpoint's router flags spelled out (the released config class's defaults differ).
BASE = {"hidden_size": 16, "intermediate_size": 24, "num_experts": [8], "layer_index": 1, "moe_2layer_gate": False,
        "moe_use_logits_norm": True, "moe_feature_no_mul_topk": True}


class Case:
    def __init__(self, tmp, config=None):
        self.config = dict(BASE if config is None else config)
        case = R.random_case(self.config, 4, 11)
        self.weights = dict(case["weights"])
        self.inputs = dict(case["inputs"])
        self.dir = tempfile.mkdtemp(dir=tmp)
        self.pc = os.path.join(self.dir, "C.json")
        self.pw = os.path.join(self.dir, "W.safetensors")
        self.pi = os.path.join(self.dir, "I.safetensors")
        self.po = os.path.join(self.dir, "O.safetensors")
        self.config_text = None  # raw text overrides self.config

    def write(self):
        with open(self.pc, "w") as f:
            f.write(self.config_text if self.config_text is not None else json.dumps(self.config))
        st.save(self.pw, self.weights)
        st.save(self.pi, self.inputs)

    def args(self):
        return ["layer", "--config", self.pc, "--weights", self.pw, "--inputs", self.pi, "--out", self.po]


def run(exe, args):
    p = subprocess.run([exe] + args, capture_output=True, text=True, timeout=60)
    return p.returncode, p.stdout, p.stderr


def main():
    args, exe = H.parse_test_args(case_filter=False)
    if H.moepp_binary_missing(exe):
        return 1
    tmp = tempfile.mkdtemp(prefix="moepp_errors_")
    tally = H.Tally()

    def check(name, mutate, expect, expect_ok=False, raw_args=None):
        """mutate(case) breaks a valid case; expect: list of substrings (one must be in stderr);
        the strings may use {pc} {pw} {pi} for the file paths (or basenames)."""
        case = Case(tmp)
        try:
            mutate(case)
            if not getattr(case, "skip_write", False):
                case.write()
            post = getattr(case, "post_write", None)
            if post:
                post(case)
            rc, out, err = run(exe, raw_args(case) if raw_args else case.args())
        except Exception as e:  # noqa: BLE001
            tally.fail(f"{name}: harness error {type(e).__name__}: {e}")
            return
        if expect_ok:
            ok = rc == 0 and os.path.exists(case.po)
            msg = "" if ok else f"rc={rc} stderr={err.strip()[:300]!r}"
        else:
            subs = [s.format(pc=case.pc, pw=case.pw, pi=case.pi, po=case.po) for s in expect]
            low = err.lower()
            named = any((s.lower() in low) if not s.startswith("re:") else re.search(s[3:], err, re.I)
                        for s in subs)
            ok = rc > 0 and named and rc < 128
            msg = f"rc={rc}"
            if rc <= 0 or rc >= 128:
                msg += " (expected a clean non-zero exit)" if rc == 0 else " (killed by a signal / crash)"
            if not named:
                msg += f"; stderr does not name any of {expect}"
            msg += f"; stderr={err.strip()[:300]!r}"
        if ok:
            tally.ok(name + (f"  [{err.strip()[:160]}]" if args.v and not expect_ok else ""))
        else:
            tally.fail(f"{name}: {msg}")

    def cfg_set(**kw):
        def m(c):
            c.config.update(kw)
        return m

    def cfg_del(key):
        def m(c):
            del c.config[key]
        return m

    # ---- control ------------------------------------------------------------------------------------
    check("control/valid_case_runs", lambda c: None, [], expect_ok=True)
    check("control/valid_without_grads", lambda c: (c.inputs.pop("grad_y"), c.inputs.pop("grad_router_logits")),
          [], expect_ok=True)

    # ---- config -------------------------------------------------------------------------------------
    def malformed(c):
        c.config_text = '{"hidden_size": 16, "intermediate_size": 24, "num_experts": [8], '  # truncated
    check("config/malformed_json", malformed, ["{pc}", "C.json", "json", "parse"])
    check("config/not_an_object", lambda c: setattr(c, "config_text", "[1, 2, 3]"), ["{pc}", "C.json", "object"])
    check("config/missing_hidden_size", cfg_del("hidden_size"), ["hidden_size"])
    check("config/missing_intermediate_size", cfg_del("intermediate_size"), ["intermediate_size"])
    check("config/missing_num_experts", cfg_del("num_experts"), ["num_experts"])
    check("config/top_k_string", cfg_set(moe_top_k="2"), ["moe_top_k"])
    check("config/top_k_float", cfg_set(moe_top_k=2.5), ["moe_top_k"])
    check("config/bool_as_string", cfg_set(moe_2layer_gate="true"), ["moe_2layer_gate"])
    check("config/hidden_size_zero", cfg_set(hidden_size=0), ["hidden_size"])
    check("config/hidden_size_negative", cfg_set(hidden_size=-16), ["hidden_size"])
    check("config/num_experts_two_entries", cfg_set(num_experts=[8, 8]), ["num_experts"])
    check("config/unknown_moe_key", cfg_set(moe_top_kk=2), ["moe_top_kk"])
    check("config/top_k_gt_E", cfg_set(moe_top_k=9), ["moe_top_k", "top_k", "top-k"])
    check("config/top_k_zero", cfg_set(moe_top_k=0), ["moe_top_k", "top_k", "top-k"])
    check("config/n_ffn_zero", cfg_set(num_experts=[4]), ["n_ffn", "num_experts", "ffn"])
    check("config/n_ffn_negative", cfg_set(num_experts=[8], n_constant_experts=7),
          ["n_ffn", "num_experts", "ffn", "n_constant_experts"])
    check("config/negative_n_zero", cfg_set(n_zero_experts=-1), ["n_zero_experts"])
    check("config/invalid_router", cfg_set(moe_router="switch"), ["moe_router", "switch"])
    check("config/router_wrong_type", cfg_set(moe_router=1), ["moe_router"])
    check("config/topk_with_zc_experts", cfg_set(moe_router="topk", n_zero_experts=1),
          ["moe_router", "topk", "n_zero_experts", "zero"])
    check("config/adamoe_with_copy_expert", cfg_set(moe_router="adamoe", n_zero_experts=2, n_copy_experts=1),
          ["adamoe", "n_copy_experts", "copy"])
    check("config/adamoe_with_mixtral_gating", cfg_set(moe_router="adamoe", n_zero_experts=2, n_copy_experts=0,
                                                       n_constant_experts=0, moe_use_mixtral_gating=True,
                                                       moe_gating_residual=False),
          ["moe_use_mixtral_gating", "mixtral"])
    check("config/relu_with_zero_expert", cfg_set(moe_router="relu", n_zero_experts=1),
          ["relu", "n_zero_experts", "zero"])
    check("config/relu_with_capacity_training", cfg_set(moe_router="relu", training=True, moe_capacity_factor=1.0,
                                                        moe_gating_residual=False, layer_index=0),
          ["moe_capacity_factor", "capacity"])
    check("config/tau_zero", cfg_set(moe_tau=0.0), ["moe_tau"])
    check("config/tau_above_1", cfg_set(moe_tau=1.5), ["moe_tau"])
    check("config/capacity_factor_zero", cfg_set(moe_capacity_factor=0), ["moe_capacity_factor"])
    check("config/capacity_factor_string", cfg_set(moe_capacity_factor="1.1"), ["moe_capacity_factor"])
    check("config/gate_norm_std_zero", cfg_set(moe_gate_norm_std=0.0), ["moe_gate_norm_std"])
    check("config/aux_coef_negative", cfg_set(moe_aux_loss_coef=-0.1), ["moe_aux_loss_coef"])
    check("config/layer_index_negative", cfg_set(layer_index=-1), ["layer_index"])
    check("config/logits_norm_with_E1", cfg_set(moe_router="topk", num_experts=[1], moe_top_k=1,
                                                n_zero_experts=0, layer_index=0),
          ["moe_use_logits_norm", "num_experts", "logits"])

    # ---- weights ------------------------------------------------------------------------------------
    check("weights/missing_tensor", lambda c: c.weights.pop("experts.experts.1.down_proj.weight"),
          ["experts.experts.1.down_proj.weight"])
    check("weights/missing_router", lambda c: c.weights.pop("gate.wg.weight"), ["gate.wg.weight"])
    check("weights/missing_gate_map_layer1", lambda c: c.weights.pop("gate.gate_map.weight"),
          ["gate.gate_map.weight", "gate_map"])
    check("weights/missing_constant", lambda c: c.weights.pop("experts.experts.4.constant"),
          ["experts.experts.4.constant"])
    check("weights/extra_tensor", lambda c: c.weights.update({"experts.experts.7.up_proj.weight":
                                                              np.zeros((48, 16), np.float32)}),
          ["experts.experts.7.up_proj.weight"])
    check("weights/extra_unrelated_tensor", lambda c: c.weights.update({"foo.bar": np.zeros((3,), np.float32)}),
          ["foo.bar"])
    check("weights/two_layer_names_with_one_layer_gate",
          lambda c: c.weights.update({"gate.wg.0.weight": np.zeros((64, 16), np.float32)}), ["gate.wg.0.weight"])
    check("weights/misshaped_up_proj", lambda c: c.weights.update({"experts.experts.0.up_proj.weight":
                                                                   np.zeros((24, 16), np.float32)}),
          ["experts.experts.0.up_proj.weight"])
    check("weights/transposed_down_proj", lambda c: c.weights.update({"experts.experts.2.down_proj.weight":
                                                                      np.zeros((24, 16), np.float32)}),
          ["experts.experts.2.down_proj.weight"])
    check("weights/misshaped_router", lambda c: c.weights.update({"gate.wg.weight": np.zeros((8, 15), np.float32)}),
          ["gate.wg.weight"])
    check("weights/int_dtype", lambda c: c.weights.update({"gate.wg.weight": np.zeros((8, 16), np.int32)}),
          ["gate.wg.weight", "dtype", "I32"])

    def truncate(path, keep):
        def post(c):
            p = getattr(c, path)
            data = open(p, "rb").read()
            with open(p, "wb") as f:
                f.write(data[: keep(len(data))])
        return post

    def m_trunc_w(c):
        c.post_write = truncate("pw", lambda n: n - 100)
    check("weights/truncated_data", m_trunc_w, ["{pw}", "W.safetensors"])

    def m_trunc_w_header(c):
        c.post_write = truncate("pw", lambda n: 20)
    check("weights/truncated_header", m_trunc_w_header, ["{pw}", "W.safetensors"])

    def m_trunc_w_len(c):
        c.post_write = truncate("pw", lambda n: 5)
    check("weights/shorter_than_8_bytes", m_trunc_w_len, ["{pw}", "W.safetensors"])

    def m_garbage_header(c):
        def post(c):
            with open(c.pw, "wb") as f:
                f.write((16).to_bytes(8, "little") + b"not json at all!")
        c.post_write = post
    check("weights/garbage_header", m_garbage_header, ["{pw}", "W.safetensors"])

    def m_bad_offsets(c):
        def post(c):
            data = open(c.pw, "rb").read()
            n = int.from_bytes(data[:8], "little")
            h = json.loads(data[8 : 8 + n])
            h["gate.wg.weight"]["data_offsets"][1] += 4
            hb = json.dumps(h).encode()
            hb += b" " * ((8 - len(hb) % 8) % 8)
            with open(c.pw, "wb") as f:
                f.write(len(hb).to_bytes(8, "little") + hb + data[8 + n :])
        c.post_write = post
    check("weights/bad_data_offsets", m_bad_offsets, ["{pw}", "W.safetensors", "gate.wg.weight"])

    # ---- inputs -------------------------------------------------------------------------------------
    check("inputs/x_wrong_width", lambda c: c.inputs.update(x=np.zeros((4, 15), np.float32)), ["re:\\bx\\b"])
    check("inputs/x_1d", lambda c: c.inputs.update(x=np.zeros((16,), np.float32)), ["re:\\bx\\b"])
    check("inputs/missing_x", lambda c: c.inputs.pop("x"), ["re:\\bx\\b"])
    check("inputs/missing_gate_residual_layer1", lambda c: c.inputs.pop("gate_residual"), ["gate_residual"])
    check("inputs/gate_residual_wrong_shape",
          lambda c: c.inputs.update(gate_residual=np.zeros((4, 7), np.float32)), ["gate_residual"])
    check("inputs/gate_residual_wrong_T",
          lambda c: c.inputs.update(gate_residual=np.zeros((3, 8), np.float32)), ["gate_residual"])
    check("inputs/grad_y_wrong_shape", lambda c: c.inputs.update(grad_y=np.zeros((4, 17), np.float32)), ["grad_y"])
    check("inputs/grad_router_logits_wrong_shape",
          lambda c: c.inputs.update(grad_router_logits=np.zeros((4, 9), np.float32)), ["grad_router_logits"])
    check("inputs/grad_router_logits_without_grad_y", lambda c: c.inputs.pop("grad_y"),
          ["grad_router_logits", "grad_y"])

    def m_trunc_i(c):
        c.post_write = truncate("pi", lambda n: n - 7)
    check("inputs/truncated", m_trunc_i, ["{pi}", "I.safetensors"])

    # ---- files / arguments --------------------------------------------------------------------------
    nope = os.path.join(tmp, "does_not_exist")
    check("files/config_missing", lambda c: None, [nope + ".json"],
          raw_args=lambda c: ["layer", "--config", nope + ".json", "--weights", c.pw, "--inputs", c.pi,
                              "--out", c.po])
    check("files/weights_missing", lambda c: None, [nope + ".w.safetensors"],
          raw_args=lambda c: ["layer", "--config", c.pc, "--weights", nope + ".w.safetensors", "--inputs", c.pi,
                              "--out", c.po])
    check("files/inputs_missing", lambda c: None, [nope + ".i.safetensors"],
          raw_args=lambda c: ["layer", "--config", c.pc, "--weights", c.pw, "--inputs", nope + ".i.safetensors",
                              "--out", c.po])
    check("files/out_dir_missing", lambda c: None, [os.path.join(nope, "O.safetensors")],
          raw_args=lambda c: ["layer", "--config", c.pc, "--weights", c.pw, "--inputs", c.pi,
                              "--out", os.path.join(nope, "O.safetensors")])
    check("args/missing_out_option", lambda c: None, ["--out", "out"],
          raw_args=lambda c: ["layer", "--config", c.pc, "--weights", c.pw, "--inputs", c.pi])
    # `moepp bench layer --device`: refused before any work (a build without nvcc says so for cuda).
    check("args/bench_layer_unknown_device", lambda c: None, ["--device must be cpu or cuda, got 'tpu'"],
          raw_args=lambda c: ["bench", "layer", "--device", "tpu"])
    check("args/bench_layer_cuda_unknown_precision", lambda c: None,
          ["unknown precision 'fp8'", "built without CUDA"],
          raw_args=lambda c: ["bench", "layer", "--device", "cuda", "--precision", "fp8"])

    shutil.rmtree(tmp, ignore_errors=True)
    return tally.finish()


if __name__ == "__main__":
    sys.exit(main())
