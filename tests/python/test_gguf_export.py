#!/usr/bin/python3
"""`moepp convert --to gguf` (model/gguf_export.h, io/gguf_writer.h) checked byte by byte with an
independent GGUF reader (gguf_np.py, numpy + stdlib only; no llama.cpp needed).

Run: /usr/bin/python3 tests/python/test_gguf_export.py --moepp /path/to/moepp [-k SUBSTRING] [-v]

A small random vanilla MoE (V 400, D 32, I 48, 2 layers, 4 heads, 2 KV heads, 4 experts, top-2,
Mixtral gating; random norms) is written as safetensors and converted at F32 and BF16. Checked:
  header: magic, version 3, tensor and metadata counts; every metadata key's GGUF value type and value
  (llama.* from the config, general.*, the tokenizer section); alignment: tensor offsets multiples of
  32, ascending, non-overlapping, the data section aligned and the file ending at the padded end;
  tensors: names, ggml dimensions (reversed shapes), types (norms F32; the rest F32 or BF16) and every
  value against the safetensors source: token_embd, attn_v/output, norms, ffn_gate_inp, the experts
  gathered into ffn_gate_exps / ffn_up_exps (halves of up_proj) / ffn_down_exps, output; attn_q and
  attn_k permuted within each head from rotate_half order to adjacent pairs, checked both against an
  explicit index formula and functionally (adjacent-pair RoPE on the permuted rows gives the same
  attention scores as rotate_half RoPE on the original rows);
  vocabulary: a synthetic SentencePiece-shaped one without tokenizer.model (400 distinct pieces,
  specials, 256 byte pieces), and a real one (`moepp tokenizer train`, 320 pieces, padded to 400): the pieces of an encoded text
  are the GGUF tokens at its ids; bos/eos/unk/pad ids;
  refusals: MoE++ and router variants that llama.cpp cannot run exit 1 naming the config key.
Prints `N passed, M failed`; exit 1 on failure.
"""
import json
import os
import subprocess
import sys
import tempfile

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gguf_np as G  # noqa: E402
import helpers as H  # noqa: E402
import safetensors_np as st  # noqa: E402

V, D, I, L, NH, NKV, E, K = 400, 32, 48, 2, 4, 2, 4, 2
HD = D // NH
CONFIG = {"vocab_size": V, "hidden_size": D, "intermediate_size": I, "num_hidden_layers": L,
          "num_attention_heads": NH, "num_key_value_heads": NKV, "max_position_embeddings": 96,
          "num_experts": [E], "moe_top_k": K, "moe_router": "topk", "moe_2layer_gate": False,
          "moe_use_logits_norm": False, "moe_use_mixtral_gating": True, "rms_norm_eps": 1e-5,
          "rope_theta": 5000.0, "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0}


def make_weights(seed):
    r = np.random.default_rng(seed)
    n = lambda *s: r.normal(0, 0.3, size=s).astype(np.float32)  # noqa: E731
    W = {"model.embed_tokens.weight": n(V, D), "model.norm.weight": 1 + n(D), "lm_head.weight": n(V, D)}
    for i in range(L):
        b = f"model.layers.{i}."
        W[b + "input_layernorm.weight"] = 1 + n(D)
        W[b + "post_attention_layernorm.weight"] = 1 + n(D)
        W[b + "self_attn.q_proj.weight"] = n(NH * HD, D)
        W[b + "self_attn.k_proj.weight"] = n(NKV * HD, D)
        W[b + "self_attn.v_proj.weight"] = n(NKV * HD, D)
        W[b + "self_attn.o_proj.weight"] = n(D, NH * HD)
        W[b + "mlp.moe.gate.wg.weight"] = n(E, D)
        for e in range(E):
            W[b + f"mlp.moe.experts.experts.{e}.up_proj.weight"] = n(2 * I, D)
            W[b + f"mlp.moe.experts.experts.{e}.down_proj.weight"] = n(D, I)
    return W


def convert(exe, model_dir, out, dtype):
    return subprocess.run([exe, "convert", "--to", "gguf", "--model", model_dir, "--out", out, "--dtype", dtype],
                          capture_output=True, text=True, timeout=120)


def permute_index(n_heads, hd):
    """GGUF row j of a head comes from source row src[j]: j = 2i + p <- p * hd/2 + i (per head)."""
    src = []
    for h in range(n_heads):
        for j in range(hd):
            i, p = j // 2, j % 2
            src.append(h * hd + p * (hd // 2) + i)
    return np.array(src)


def rope_rotate_half(x, pos, theta):
    half = x.shape[-1] // 2
    inv = 1.0 / theta ** (np.arange(half) * 2.0 / x.shape[-1])
    c, s = np.cos(pos * inv), np.sin(pos * inv)
    a, b = x[..., :half], x[..., half:]
    return np.concatenate([a * c - b * s, b * c + a * s], axis=-1)


def rope_adjacent(x, pos, theta):
    half = x.shape[-1] // 2
    inv = 1.0 / theta ** (np.arange(half) * 2.0 / x.shape[-1])
    c, s = np.cos(pos * inv), np.sin(pos * inv)
    a, b = x[..., 0::2], x[..., 1::2]
    out = np.empty_like(x)
    out[..., 0::2] = a * c - b * s
    out[..., 1::2] = b * c + a * s
    return out


EXPECTED_KV = {  # key: (GGUF type id, value or None = checked elsewhere)
    "general.architecture": (8, "llama"), "general.name": (8, None), "general.file_type": (4, None),
    "llama.vocab_size": (4, V), "llama.context_length": (4, 96), "llama.embedding_length": (4, D),
    "llama.block_count": (4, L), "llama.feed_forward_length": (4, I), "llama.attention.head_count": (4, NH),
    "llama.attention.head_count_kv": (4, NKV), "llama.rope.dimension_count": (4, HD),
    "llama.rope.freq_base": (6, 5000.0), "llama.attention.layer_norm_rms_epsilon": (6, np.float32(1e-5)),
    "llama.expert_count": (4, E), "llama.expert_used_count": (4, K), "tokenizer.ggml.model": (8, "llama"),
    "tokenizer.ggml.tokens": (("array", 8), None), "tokenizer.ggml.scores": (("array", 6), None),
    "tokenizer.ggml.token_type": (("array", 5), None), "tokenizer.ggml.bos_token_id": (4, 1),
    "tokenizer.ggml.eos_token_id": (4, 2), "tokenizer.ggml.add_bos_token": (7, True),
    "tokenizer.ggml.add_eos_token": (7, False),
}


def main():
    args, exe = H.parse_test_args()
    if H.moepp_binary_missing(exe):
        return 1
    T = H.Tally()
    tmp = tempfile.mkdtemp(prefix="moepp_gguf_test_")
    W = make_weights(5)
    model = os.path.join(tmp, "vanilla")
    H.write_checkpoint(model, CONFIG, W)
    files = {}
    for dt in ("f32", "bf16"):
        out = os.path.join(tmp, f"m-{dt}.gguf")
        p = convert(exe, model, out, dt)
        if p.returncode != 0:
            T.fail(f"convert --to gguf --dtype {dt}: exit {p.returncode}: {p.stderr}")
            return T.finish()
        files[dt] = G.read(out)

    def want(name):
        return not args.k or args.k in name

    def header_and_metadata():
        for dt, g in files.items():
            assert g.version == 3, g.version
            assert len(g.tensors) == 3 + L * 10, len(g.tensors)
            for key, (typ, val) in EXPECTED_KV.items():
                assert key in g.kv, f"{dt}: missing {key}"
                assert g.kv_types[key] == typ, f"{dt}: {key} has type {g.kv_types[key]}, expected {typ}"
                if val is not None:
                    got = g.kv[key]
                    assert (np.float32(got) == np.float32(val)) if typ == 6 else got == val, f"{dt}: {key} = {got}"
            assert g.kv["general.file_type"] == {"f32": 0, "bf16": 32}[dt]
            assert "general.alignment" not in g.kv and g.alignment == 32

    def alignment_and_offsets():
        for dt, g in files.items():
            assert g.data_start % 32 == 0
            assert all(b == 0 for b in g._buf[g.header_end:g.data_start]), "header padding is not zeros"
            end = 0
            for name in g.order:
                t = g.tensors[name]
                assert t.offset % 32 == 0, f"{dt}: {name} offset {t.offset}"
                assert t.offset >= end, f"{dt}: {name} overlaps the previous tensor"
                assert all(b == 0 for b in g._buf[g.data_start + end:g.data_start + t.offset]), "padding not zeros"
                end = t.offset + t.nbytes
            assert g.file_size == g.data_start + (end + 31) // 32 * 32, (g.file_size, g.data_start, end)

    def tensor_infos():
        for dt, g in files.items():
            big = G.GGML_F32 if dt == "f32" else G.GGML_BF16
            exp = {"token_embd.weight": ([D, V], big), "output_norm.weight": ([D], G.GGML_F32),
                   "output.weight": ([D, V], big)}
            for i in range(L):
                b = f"blk.{i}."
                exp.update({b + "attn_norm.weight": ([D], G.GGML_F32), b + "ffn_norm.weight": ([D], G.GGML_F32),
                            b + "attn_q.weight": ([D, NH * HD], big), b + "attn_k.weight": ([D, NKV * HD], big),
                            b + "attn_v.weight": ([D, NKV * HD], big), b + "attn_output.weight": ([NH * HD, D], big),
                            b + "ffn_gate_inp.weight": ([D, E], big), b + "ffn_gate_exps.weight": ([D, I, E], big),
                            b + "ffn_up_exps.weight": ([D, I, E], big), b + "ffn_down_exps.weight": ([I, D, E], big)})
            assert set(g.tensors) == set(exp), sorted(set(g.tensors) ^ set(exp))
            for name, (dims, typ) in exp.items():
                t = g.tensors[name]
                assert t.dims == dims and t.ggml_type == typ, f"{dt}: {name}: dims {t.dims} type {t.ggml_type}"

    def tensor_values():
        perm_q, perm_k = permute_index(NH, HD), permute_index(NKV, HD)
        for dt, g in files.items():
            r = (lambda a: a) if dt == "f32" else st.round_to_bf16
            chk = {"token_embd.weight": r(W["model.embed_tokens.weight"]), "output_norm.weight": W["model.norm.weight"],
                   "output.weight": r(W["lm_head.weight"])}
            for i in range(L):
                s, b = f"model.layers.{i}.", f"blk.{i}."
                up = np.stack([W[s + f"mlp.moe.experts.experts.{e}.up_proj.weight"] for e in range(E)])
                down = np.stack([W[s + f"mlp.moe.experts.experts.{e}.down_proj.weight"] for e in range(E)])
                chk.update({
                    b + "attn_norm.weight": W[s + "input_layernorm.weight"],
                    b + "ffn_norm.weight": W[s + "post_attention_layernorm.weight"],
                    b + "attn_q.weight": r(W[s + "self_attn.q_proj.weight"][perm_q]),
                    b + "attn_k.weight": r(W[s + "self_attn.k_proj.weight"][perm_k]),
                    b + "attn_v.weight": r(W[s + "self_attn.v_proj.weight"]),
                    b + "attn_output.weight": r(W[s + "self_attn.o_proj.weight"]),
                    b + "ffn_gate_inp.weight": r(W[s + "mlp.moe.gate.wg.weight"]),
                    b + "ffn_gate_exps.weight": r(up[:, :I, :]), b + "ffn_up_exps.weight": r(up[:, I:, :]),
                    b + "ffn_down_exps.weight": r(down)})
            for name, ref in chk.items():
                got = G.array(g, name)
                assert got.shape == ref.shape, f"{dt}: {name}: shape {got.shape} vs {ref.shape}"
                assert np.array_equal(got, ref), f"{dt}: {name}: max diff {np.abs(got - ref).max()}"

    def rope_permutation_is_the_same_function():
        g = files["f32"]
        x = np.random.default_rng(9).normal(size=(6, D)).astype(np.float64)
        for i in range(L):
            wq = W[f"model.layers.{i}.self_attn.q_proj.weight"].astype(np.float64)
            wk = W[f"model.layers.{i}.self_attn.k_proj.weight"].astype(np.float64)
            gq = G.array(g, f"blk.{i}.attn_q.weight").astype(np.float64)
            gk = G.array(g, f"blk.{i}.attn_k.weight").astype(np.float64)
            pos = np.arange(6)[:, None, None]
            for h in range(NH):
                kv = h // (NH // NKV)
                q0 = rope_rotate_half((x @ wq.T).reshape(6, NH, HD)[:, h:h + 1], pos, 5000.0)[:, 0]
                k0 = rope_rotate_half((x @ wk.T).reshape(6, NKV, HD)[:, kv:kv + 1], pos, 5000.0)[:, 0]
                q1 = rope_adjacent((x @ gq.T).reshape(6, NH, HD)[:, h:h + 1], pos, 5000.0)[:, 0]
                k1 = rope_adjacent((x @ gk.T).reshape(6, NKV, HD)[:, kv:kv + 1], pos, 5000.0)[:, 0]
                s0, s1 = q0 @ k0.T, q1 @ k1.T
                assert np.allclose(s0, s1, rtol=1e-10, atol=1e-10), f"layer {i} head {h}: {np.abs(s0 - s1).max()}"
            # and without the permutation the scores differ (the check can fail)
            q_raw = rope_adjacent((x @ wq.T).reshape(6, NH, HD), pos, 5000.0)
            k_raw = rope_adjacent((x @ wk.T).reshape(6, NKV, HD), pos, 5000.0)
            q_ref = rope_rotate_half((x @ wq.T).reshape(6, NH, HD), pos, 5000.0)
            k_ref = rope_rotate_half((x @ wk.T).reshape(6, NKV, HD), pos, 5000.0)
            assert not np.allclose(q_raw[:, 0] @ k_raw[:, 0].T, q_ref[:, 0] @ k_ref[:, 0].T)

    def synthetic_vocabulary():
        g = files["f32"]
        toks, types = g.kv["tokenizer.ggml.tokens"], g.kv["tokenizer.ggml.token_type"]
        assert len(toks) == V and len(set(toks)) == V and len(types) == V
        assert len(g.kv["tokenizer.ggml.scores"]) == V
        assert toks[1] == "<s>" and toks[2] == "</s>" and types[1] == 3 and types[2] == 3
        unk = g.kv["tokenizer.ggml.unknown_token_id"]
        assert toks[unk] == "<unk>" and types[unk] == 2
        byte_ids = [i for i, t in enumerate(types) if t == 6]
        assert [toks[i] for i in byte_ids] == [f"<0x{b:02X}>" for b in range(256)]

    def real_vocabulary():
        d = os.path.join(tmp, "with_tok")
        H.write_checkpoint(d, CONFIG, W)
        text = os.path.join(tmp, "tok.txt")
        with open(H.SLICE_TRAIN, encoding="utf-8") as f, open(text, "w", encoding="utf-8") as o:
            o.write(f.read(60_000))
        p = subprocess.run([exe, "tokenizer", "train", "--input", text, "--vocab-size", "320", "--out",
                            os.path.join(d, "tokenizer.model")], capture_output=True, text=True, timeout=300)
        assert p.returncode == 0, p.stderr
        out = os.path.join(tmp, "tok.gguf")
        p = convert(exe, d, out, "f32")
        assert p.returncode == 0, p.stderr
        g = G.read(out)
        toks, types = g.kv["tokenizer.ggml.tokens"], g.kv["tokenizer.ggml.token_type"]
        assert len(toks) == V  # 320 pieces, padded to vocab_size with unused ones
        assert all(t == 5 for t in types[320:]) and toks[350] == "<unused_350>"
        sample = "The history of the city is long, and 42 people knew it."
        ids = subprocess.run([exe, "tokenizer", "encode", "--model", os.path.join(d, "tokenizer.model"), "--text",
                              sample], capture_output=True, text=True, check=True).stdout.split()
        pieces = subprocess.run([exe, "tokenizer", "encode", "--model", os.path.join(d, "tokenizer.model"), "--pieces",
                                 "--text", sample], capture_output=True, text=True, check=True).stdout.split()
        assert len(ids) == len(pieces) > 5
        assert [toks[int(i)] for i in ids] == pieces, ([toks[int(i)] for i in ids], pieces)
        assert g.kv["tokenizer.ggml.bos_token_id"] == 1 and g.kv["tokenizer.ggml.eos_token_id"] == 2
        assert g.kv["tokenizer.ggml.padding_token_id"] == 0 and g.kv["tokenizer.ggml.unknown_token_id"] == 3
        assert types[1] == 3 and types[3] == 2
        scores = g.kv["tokenizer.ggml.scores"]
        assert len(set(scores[259:320])) > 1  # real merge scores, not a constant

    def refusals():
        cases = [({"moe_router": "moepp", "num_experts": [E + 4], "n_zero_experts": 1, "n_copy_experts": 1,
                   "n_constant_experts": 2}, "n_zero_experts"),
                 ({"moe_router": "moepp", "n_zero_experts": 0, "n_copy_experts": 0, "n_constant_experts": 0},
                  "moe_router"),
                 ({"moe_use_logits_norm": True}, "moe_use_logits_norm"),
                 ({"moe_use_mixtral_gating": False}, "moe_use_mixtral_gating"),
                 ({"moe_gating_residual": True}, "moe_gating_residual")]
        for extra, key in cases:
            d = os.path.join(tmp, "refuse_" + key)
            cfg = dict(CONFIG, **extra)
            os.makedirs(d, exist_ok=True)
            with open(os.path.join(d, "config.json"), "w") as f:
                json.dump(cfg, f)
            out = os.path.join(tmp, key + ".gguf")
            p = convert(exe, d, out, "f32")
            assert p.returncode == 1, f"{key}: exit {p.returncode}"
            assert key in p.stderr and "llama" in p.stderr, f"{key}: {p.stderr}"
            assert not os.path.exists(out)
        p = convert(exe, model, os.path.join(tmp, "x.gguf"), "int8")
        assert p.returncode == 1 and "--dtype" in p.stderr, p.stderr
        # the non-scaling alternative to mixtral gating (moe_feature_no_mul_topk) is accepted
        d = os.path.join(tmp, "no_mul")
        H.write_checkpoint(d, dict(CONFIG, moe_use_mixtral_gating=False, moe_feature_no_mul_topk=True), W)
        p = convert(exe, d, os.path.join(tmp, "no_mul.gguf"), "f32")
        assert p.returncode == 0, p.stderr

    cases = [header_and_metadata, alignment_and_offsets, tensor_infos, tensor_values,
             rope_permutation_is_the_same_function, synthetic_vocabulary, real_vocabulary, refusals]
    T.run_each(*[c for c in cases if want(c.__name__)])
    return T.finish()


if __name__ == "__main__":
    sys.exit(main())
