#!/usr/bin/python3
"""PyTorch `.bin` checkpoints (torch.save zip + pickle, as the released MoE-Plus-Plus-7B ships) read by
the C++ engine natively, against the same weights in safetensors.

Run: /usr/bin/python3 tests/python/test_torch_bin.py --moepp /path/to/moepp [-k SUBSTRING] [-v]

One small random MoE++ model (model_ref.make_weights) is written in many layouts:
  safetensors F32 / BF16 / F16, sharded BF16 (model.safetensors.index.json);
  pytorch_model.bin F32 / BF16 / F16 (torch.save of a dict of tensors), sharded BF16
  (pytorch_model-0000i-of-0000n.bin + pytorch_model.bin.index.json), a protocol-4 pickle, and a
  "state_dict" variant (OrderedDict with _metadata, nn.Parameter values, every tensor a view into one
  shared flat storage at an offset, the 2-D ones transposed views, i.e. non-contiguous);
and `moepp convert` outputs of several of them (--dtype f32 and bf16). `moepp dump` runs each on the
same tokens; the logits must be bitwise identical within a dtype group (the same values reach the
engine whatever the format); converted configs keep the source's keys and spell out every router key.
Rotary-embedding buffers saved by other tools (model.layers.N.self_attn.rotary_emb.inv_freq /
cos_cached / sin_cached) are skipped with one notice line (dump; convert drops them); any other
unknown tensor, near-misses of those names included, is rejected (the inference loader's side is in
tests/cpp/test_ignored_buffers.cpp). Error cases: truncated .bin, missing / unexpected / mis-shaped tensor,
F64 tensor, a pickled non-tensor object (a disallowed global), a deflate-compressed zip, an index
naming a missing shard: each exits 1 with a message naming the file. Prints `N passed, M failed`;
exit 1 on failure.
"""
import collections
import datetime
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import helpers as H  # noqa: E402
import model_ref as M  # noqa: E402
import safetensors_np as st  # noqa: E402

CONFIG = {"architectures": ["MoeForCausalLM"], "model_type": "MoE++", "vocab_size": 97, "hidden_size": 32,
          "intermediate_size": 48, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
          "max_position_embeddings": 128, "num_experts": [8], "rms_norm_eps": 1e-6, "rope_theta": 10000.0,
          "hidden_act": "silu", "tie_word_embeddings": False, "torch_dtype": "bfloat16",
          # The 7B checkpoint's router flags; moe_gate_norm_std and moe_use_mixtral_gating are left out.
          "moe_2layer_gate": False, "moe_use_logits_norm": True, "moe_feature_no_mul_topk": True}
TOKENS = "1,5,9,33,2,70,64,12,88,3,41,41,7,0,96"
TORCH_DT = {"F32": torch.float32, "BF16": torch.bfloat16, "F16": torch.float16}


class Failure(Exception):
    pass


def weights_in(W, dtype):
    """{name: torch tensor of `dtype`} (rounded by torch: round to nearest even)."""
    return {k: torch.from_numpy(v).to(TORCH_DT[dtype]) for k, v in W.items()}


def new_dir(tmp, name, tokenizer=b"not really a sentencepiece model\x00\x01"):
    d = os.path.join(tmp, name)
    os.makedirs(d)
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(CONFIG, f, indent=1)
    with open(os.path.join(d, "tokenizer.model"), "wb") as f:
        f.write(tokenizer)
    return d


def write_st(d, T, dtype, shards=1):
    W = {k: v.float().numpy() for k, v in T.items()}  # exact: the values are representable in dtype
    H.write_safetensors_weights(d, W, dtype, shards)


def write_bin(d, T, shards=1, **save_kw):
    names = list(T)
    if shards == 1:
        torch.save(dict(T), os.path.join(d, "pytorch_model.bin"), **save_kw)
        return
    weight_map = {}
    for s, idx in enumerate(np.array_split(np.arange(len(names)), shards)):
        fn = f"pytorch_model-{s + 1:05d}-of-{shards:05d}.bin"
        torch.save({names[i]: T[names[i]] for i in idx}, os.path.join(d, fn), **save_kw)
        weight_map.update({names[i]: fn for i in idx})
    with open(os.path.join(d, "pytorch_model.bin.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": 0}, "weight_map": weight_map}, f, indent=1)


def state_dict_views(T):
    """An OrderedDict like Module.state_dict(): _metadata, Parameters, all tensors views of one flat
    storage at increasing offsets, 2-D ones stored transposed (non-contiguous views)."""
    total = sum(t.numel() for t in T.values()) + 3
    flat = torch.zeros(total, dtype=next(iter(T.values())).dtype)
    sd = collections.OrderedDict()
    off = 3  # a non-zero first offset
    for k, t in T.items():
        n = t.numel()
        if t.dim() == 2:
            view = flat[off:off + n].view(t.shape[1], t.shape[0]).t()  # strides (1, rows)
        else:
            view = flat[off:off + n].view(t.shape)
        view.copy_(t)
        sd[k] = torch.nn.Parameter(view, requires_grad=False) if t.dim() == 2 else view
        off += n
    sd._metadata = collections.OrderedDict({"": {"version": 1}, "model": {"version": 1}})
    return sd


def moepp(exe, *args, check=True):
    proc = subprocess.run([exe, *args], capture_output=True, text=True, timeout=300)
    if check and proc.returncode != 0:
        raise Failure(f"moepp {' '.join(args[:1])} exited {proc.returncode}: {proc.stderr.strip()[:600]}")
    return proc


def dump_logits(exe, d, tmp):
    out = os.path.join(tmp, os.path.basename(d) + ".dump.safetensors")
    moepp(exe, "dump", "--model", d, "--tokens", TOKENS, "--out", out)
    logits = st.load(out)["logits"]
    if not np.all(np.isfinite(logits)) or not np.any(logits):
        raise Failure(f"{d}: logits are not finite / all zero")
    return logits


def build_models(exe, tmp, W):
    """{dtype group: [(name, dir)]}."""
    groups = collections.defaultdict(list)

    def add(group, name, fn):
        d = new_dir(tmp, name)
        fn(d)
        groups[group].append((name, d))
        return d

    for dt in ("F32", "BF16", "F16"):
        T = weights_in(W, dt)
        add(dt, f"st_{dt}", lambda d, T=T, dt=dt: write_st(d, T, dt))
        add(dt, f"bin_{dt}", lambda d, T=T: write_bin(d, T))
    T16 = weights_in(W, "BF16")
    add("BF16", "st_BF16_sharded", lambda d: write_st(d, T16, "BF16", shards=3))
    add("BF16", "bin_BF16_sharded", lambda d: write_bin(d, T16, shards=4))
    add("BF16", "bin_BF16_state_dict_views",
        lambda d: torch.save(state_dict_views(T16), os.path.join(d, "pytorch_model.bin")))
    T32 = weights_in(W, "F32")
    add("F32", "bin_F32_protocol4", lambda d: write_bin(d, T32, pickle_protocol=4))
    add("F32", "bin_F32_state_dict_views",
        lambda d: torch.save(state_dict_views(T32), os.path.join(d, "pytorch_model.bin")))
    add("F16", "bin_F16_sharded_views", lambda d: write_bin(d, state_dict_views(weights_in(W, "F16")), shards=2))

    # moepp convert: every output is config.json + model.safetensors (+ tokenizer.model).
    conversions = [("bin_F32", "f32", "F32"), ("bin_BF16", "f32", "BF16"), ("bin_BF16_sharded", "bf16", "BF16"),
                   ("bin_F32", "bf16", "BF16"), ("bin_F16", "f32", "F16"),
                   ("bin_BF16_state_dict_views", "bf16", "BF16"), ("st_BF16_sharded", "f32", "BF16")]
    for src, dtype, group in conversions:
        s = os.path.join(tmp, src)
        o = os.path.join(tmp, f"conv_{src}_to_{dtype}")
        proc = moepp(exe, "convert", "--model", s, "--out", o, "--dtype", dtype)
        hdr = st.header_of(os.path.join(o, "model.safetensors"))
        want = "F32" if dtype == "f32" else "BF16"
        bad = [k for k, v in hdr.items() if k != "__metadata__" and v["dtype"] != want]
        if bad or set(hdr) - {"__metadata__"} != set(W):
            raise Failure(f"convert {src} --dtype {dtype}: dtypes {bad[:3]} / names differ")
        with open(os.path.join(s, "tokenizer.model"), "rb") as a, open(os.path.join(o, "tokenizer.model"), "rb") as b:
            if a.read() != b.read():
                raise Failure(f"convert {src}: tokenizer.model not copied verbatim")
        check_converted_config(src, CONFIG, json.load(open(os.path.join(o, "config.json"))), want)
        if "converted" not in proc.stdout:
            raise Failure(f"convert {src}: no summary line: {proc.stdout!r}")
        groups[group].append((os.path.basename(o), o))
    return groups


# Every router key a converted config must spell out, with the released config class's defaults for
# the keys CONFIG leaves out (and moepp's documented defaults for its extension keys).
SPELLED_OUT = {"moe_2layer_gate": True, "moe_use_logits_norm": False, "moe_gate_norm_std": 1.0,
               "moe_use_mixtral_gating": False, "moe_feature_no_mul_topk": False, "moe_expert_interval": 1,
               "moe_top_k": 2, "moe_router": "moepp", "moe_gating_residual": True, "moe_tau": 0.75,
               "moe_aux_loss_coef": 0.01, "moe_capacity_factor": None, "moe_relu_l1_coef": 1e-8,
               "n_zero_experts": 1, "n_copy_experts": 1, "n_constant_experts": 2}


def check_converted_config(src, source_cfg, out_cfg, dtype):
    """The source's keys kept (torch_dtype names the output's dtype), every router key spelled out."""
    for k, v in source_cfg.items():
        want = {"F32": "float32", "BF16": "bfloat16"}[dtype] if k == "torch_dtype" else v
        if out_cfg.get(k) != want:
            raise Failure(f"convert {src}: config.json '{k}' is {out_cfg.get(k)!r}, expected {want!r}")
    for k, v in SPELLED_OUT.items():
        if k in source_cfg:
            continue
        if k not in out_cfg or out_cfg[k] != v:
            raise Failure(f"convert {src}: config.json '{k}' is {out_cfg.get(k, '<missing>')!r}, expected {v!r}")


def rotary_buffer_cases(exe, tmp, W):
    """Checkpoints carrying the rotary buffers that other tools save load as if they were absent (one
    notice line); any other unknown tensor, also a near-miss of those names, is still rejected."""
    res = []
    T = weights_in(W, "F32")
    hd = CONFIG["hidden_size"] // CONFIG["num_attention_heads"]
    buffers = {}
    for i in range(CONFIG["num_hidden_layers"]):
        p = f"model.layers.{i}.self_attn.rotary_emb."
        buffers[p + "inv_freq"] = 1.0 / (10000.0 ** (torch.arange(0, hd, 2).float() / hd))
        buffers[p + "cos_cached"] = torch.ones(1, 1, 128, hd)
        buffers[p + "sin_cached"] = torch.zeros(1, 1, 128, hd)
    clean = new_dir(tmp, "rotary_clean")
    write_bin(clean, T)
    base = dump_logits(exe, clean, tmp)
    for case, writer in (("bin", lambda d: write_bin(d, dict(T, **buffers))),
                         ("bin_sharded", lambda d: write_bin(d, dict(T, **buffers), shards=2)),
                         ("safetensors", lambda d: write_st(d, dict(T, **buffers), "F32"))):
        name = "rotary_buffers_skipped_" + case
        try:
            d = new_dir(tmp, "rotary_" + case)
            writer(d)
            out = os.path.join(tmp, name + ".safetensors")
            proc = moepp(exe, "dump", "--model", d, "--tokens", TOKENS, "--out", out)
            got = st.load(out)["logits"]
            notes = [l for l in proc.stderr.splitlines() if "rotary" in l]
            if not np.array_equal(got.view(np.uint32), base.view(np.uint32)):
                raise Failure("logits differ from the checkpoint without the buffers")
            if len(notes) != 1 or f"skipped {len(buffers)} rotary-embedding buffers" not in notes[0]:
                raise Failure(f"expected one notice line, got {proc.stderr!r}")
            res.append((name, True, "bitwise equal logits, one notice line"))
        except Failure as e:
            res.append((name, False, str(e)))
    # convert drops them.
    d = os.path.join(tmp, "rotary_bin")
    o = os.path.join(tmp, "rotary_converted")
    proc = moepp(exe, "convert", "--model", d, "--out", o, check=False)
    hdr = st.header_of(os.path.join(o, "model.safetensors")) if proc.returncode == 0 else {}
    res.append(("rotary_buffers_convert_drops_them", proc.returncode == 0 and set(hdr) - {"__metadata__"} == set(W),
                proc.stderr.strip()[:300]))
    for bad in ("model.layers.0.self_attn.rotary_emb.inv_freqs", "model.layers.x.self_attn.rotary_emb.inv_freq",
                "model.layers.0.self_attn.rotary.inv_freq", "model.rotary_emb.inv_freq",
                "model.layers.0.mlp.rotary_emb.inv_freq"):
        d = new_dir(tmp, "rotary_bad_" + str(abs(hash(bad))))
        write_bin(d, dict(T, **{bad: torch.ones(4)}))
        res.append(expect_error(exe, "unexpected_tensor_" + bad, ["dump", "--model", d, "--tokens", "1,2,3", "--out",
                                                                  os.path.join(tmp, "x.safetensors")],
                                [os.path.join(d, "pytorch_model.bin"), f"unexpected tensor '{bad}'"]))
    return res


def format_cases(exe, tmp, W, verbose):
    results = []
    groups = build_models(exe, tmp, W)
    ref = {}
    for group, members in groups.items():
        base_name, base_dir = members[0]
        base = dump_logits(exe, base_dir, tmp)
        ref[group] = base
        for name, d in members[1:]:
            try:
                got = dump_logits(exe, d, tmp)
                if got.shape != base.shape or not np.array_equal(got.view(np.uint32), base.view(np.uint32)):
                    diff = float(np.abs(got.astype(np.float64) - base).max()) if got.shape == base.shape else -1
                    raise Failure(f"logits differ from {base_name} (max|diff| {diff:.3g})")
                results.append((f"{group}:{name}", True, f"bitwise equal to {base_name}"))
            except Failure as e:
                results.append((f"{group}:{name}", False, str(e)))
    # The dtype groups hold different (rounded) weights: close, not equal.
    for g in ("BF16", "F16"):
        diff = float(np.abs(ref[g].astype(np.float64) - ref["F32"]).max())
        scale = float(np.abs(ref["F32"]).max())
        results.append((f"{g}_vs_F32_close", 0 < diff < 0.1 * scale, f"max|diff| {diff:.3g} (scale {scale:.3g})"))
    return results


def expect_error(exe, name, args, needles):
    proc = moepp(exe, *args, check=False)
    ok = proc.returncode == 1 and all(n in proc.stderr for n in needles)
    return (name, ok, proc.stderr.strip()[:400])


def error_cases(exe, tmp, W):
    res = []
    T = weights_in(W, "F32")
    o = os.path.join(tmp, "err.out.safetensors")

    def dump_args(d):
        return ["dump", "--model", d, "--tokens", "1,2,3", "--out", o]

    d = new_dir(tmp, "err_truncated")
    write_bin(d, T)
    p = os.path.join(d, "pytorch_model.bin")
    for frac in (0.5, 0.999):
        with open(p, "rb") as f:
            data = f.read()
        with open(p, "wb") as f:
            f.write(data[:int(len(data) * frac)])
        res.append(expect_error(exe, f"truncated_{frac}", dump_args(d), [p]))
        res.append(expect_error(exe, f"convert_truncated_{frac}", ["convert", "--model", d, "--out", d + "_out"], [p]))
        write_bin(d, T)

    d = new_dir(tmp, "err_missing")
    T2 = dict(T)
    T2.pop("model.layers.1.self_attn.v_proj.weight")
    write_bin(d, T2)
    p = os.path.join(d, "pytorch_model.bin")
    missing = "missing tensor 'model.layers.1.self_attn.v_proj.weight'"
    res.append(expect_error(exe, "missing_tensor", dump_args(d), [p, missing]))

    d = new_dir(tmp, "err_missing_sharded")
    write_bin(d, T2, shards=3)
    p = os.path.join(d, "pytorch_model.bin.index.json")
    res.append(expect_error(exe, "missing_tensor_sharded", dump_args(d), [p, missing]))

    # One entry added or replaced in a valid pytorch_model.bin: (case, name, value, what the error says).
    one_bad_entry = [
        ("unexpected_tensor", "model.layers.0.self_attn.extra_buffer", torch.ones(4),
         "unexpected tensor 'model.layers.0.self_attn.extra_buffer'"),
        ("shape_mismatch", "model.norm.weight", torch.ones(31),
         "tensor 'model.norm.weight' has shape [31], expected [32]"),
        ("int_dtype", "model.norm.weight", torch.ones(32, dtype=torch.int64),
         "tensor 'model.norm.weight' has dtype I64"),
        ("f64_storage", "model.norm.weight", torch.ones(32, dtype=torch.float64),
         "global 'torch.DoubleStorage' is not allowed"),
        # pickled as a call of datetime.date: must never run
        ("pickled_object", "when", datetime.date(2024, 1, 1), "global 'datetime.date' is not allowed"),
    ]
    for case, name, value, needle in one_bad_entry:
        d = new_dir(tmp, "err_" + case)
        write_bin(d, dict(T, **{name: value}))
        res.append(expect_error(exe, case, dump_args(d), [os.path.join(d, "pytorch_model.bin"), needle]))

    d = new_dir(tmp, "err_deflate")
    write_bin(d, T)
    p = os.path.join(d, "pytorch_model.bin")
    with zipfile.ZipFile(p) as z:
        items = [(i.filename, z.read(i.filename)) for i in z.infolist()]
    with zipfile.ZipFile(p, "w", compression=zipfile.ZIP_DEFLATED) as z:
        for n, b in items:
            z.writestr(n, b)
    res.append(expect_error(exe, "deflate_compressed", dump_args(d), [p, "data.pkl", "compressed (method 8)"]))

    d = new_dir(tmp, "err_missing_shard")
    write_bin(d, T, shards=3)
    os.remove(os.path.join(d, "pytorch_model-00002-of-00003.bin"))
    res.append(expect_error(exe, "missing_shard", dump_args(d),
                            [os.path.join(d, "pytorch_model.bin.index.json"), "pytorch_model-00002-of-00003.bin",
                             "does not exist"]))

    d = new_dir(tmp, "err_no_weights")
    res.append(expect_error(exe, "no_weights", dump_args(d), [d, "pytorch_model.bin.index.json"]))
    res.append(expect_error(exe, "convert_bad_dtype", ["convert", "--model", os.path.join(tmp, "bin_F32"), "--out",
                                                       os.path.join(tmp, "x"), "--dtype", "f16"], ["--dtype f16"]))
    res.append(expect_error(exe, "convert_into_itself", ["convert", "--model", os.path.join(tmp, "bin_F32"), "--out",
                                                         os.path.join(tmp, "bin_F32")], ["is the --model directory"]))
    return res


def main():
    args, exe = H.parse_test_args()
    W = M.make_weights(CONFIG, 11)
    tally = H.Tally()
    with tempfile.TemporaryDirectory(prefix="moepp_torch_bin_") as tmp:
        results = []
        try:
            results += format_cases(exe, tmp, W, args.v)
        except Failure as e:
            results.append(("formats", False, str(e)))
        if not args.k or "error" in args.k:
            results += [("error_" + n, ok, m) for n, ok, m in error_cases(exe, tmp, W)]
        if not args.k or "rotary" in args.k:
            try:
                results += rotary_buffer_cases(exe, tmp, W)
            except Failure as e:
                results.append(("rotary_buffers", False, str(e)))
        for name, ok, msg in results:
            if args.k and args.k not in name:
                continue
            tally.record(name, ok, msg, args.v)
        shutil.rmtree(tmp, ignore_errors=True)
    return tally.finish()


if __name__ == "__main__":
    sys.exit(main())
