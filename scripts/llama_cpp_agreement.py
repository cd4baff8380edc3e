#!/usr/bin/python3
"""Logits agreement between moepp and llama.cpp on the same weights (a vanilla MoE exported with
`moepp convert --to gguf`). Needs the user's llama.cpp build (its llama-debug binary); not a test (CI
has no llama.cpp). Python 3 + numpy only.

  scripts/llama_cpp_agreement.py --moepp build/moepp --llama-debug /path/to/llama.cpp/build/bin/llama-debug
      [--model DIR] [--shape bench|small] [--dtypes f32,bf16] [--threads N] [--work DIR] [--out FILE.jsonl]

Without --model, a random vanilla checkpoint is made (numpy, normal(0, 0.02), norms 1 + normal(0, 0.1)):
--shape bench is `moepp bench infer`'s vanilla model (8 layers, D 1024, 16 heads, 8 experts of 2816,
top-2, vocab 32000, Mixtral gating), --shape small a 2-layer D 256 one. A SentencePiece tokenizer is
trained on data/slice/train.txt (`moepp tokenizer train`, 2000 pieces) and put in the checkpoint, so
that the GGUF carries a real vocabulary and both engines can be given the same text.

For each dtype (f32: the checkpoint as is; bf16: `moepp convert --dtype bf16` first, so both engines
hold the same bf16-rounded weights) and each prompt of a fixed list (lengths from a few to ~200 tokens):
  1. llama-debug -m GGUF -p TEXT --save-logits -ctk f32 -ctv f32 -fa off: llama.cpp's logits at the last
     position and its token ids (bos prepended); F32 KV cache (moepp's) and, by default, no flash
     attention (llama.cpp's CPU flash attention computes in F16: --flash-attn on shows its effect);
  2. the ids are compared with `moepp tokenizer encode --bos` of the same text (reported; a mismatch is
     listed but does not stop the check: moepp is then fed llama.cpp's ids);
  3. `moepp dump --tokens IDS` (the F32 forward of the checkpoint; the same function as the decoder):
     the logits at the last position;
  4. log-softmax of both: max and mean |difference|, whether the arg-max agrees, and the raw logits'
     max |difference|.
One JSON line per (dtype, prompt) and a summary line per dtype are printed (and appended to --out).
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "tests", "python"))
import safetensors_np as st  # noqa: E402

SHAPES = {
    "bench": dict(V=32000, D=1024, L=8, H=16, I=2816, E=8, K=2),
    "small": dict(V=32000, D=256, L=2, H=4, I=512, E=8, K=2),
}

PROMPTS = [
    "The",
    "Once upon a time, there was a little town by the sea.",
    "In 1887 the railway reached the valley, and within ten years the population had doubled; the old mill "
    "was turned into a school, and the market moved from the church square to the new station.",
    "Water boils at 100 degrees Celsius at sea level. At higher altitudes the air pressure is lower, so "
    "water boils at a lower temperature, which is why cooking instructions sometimes give longer times "
    "for mountain regions. The same principle is used in pressure cookers, which raise the pressure and "
    "with it the boiling point, so that food cooks faster. Engineers use these relations every day when "
    "they design boilers, turbines and the cooling systems of power plants and engines.",
    "def add(a, b):\n    return a + b\n\nprint(add(2, 3))",
]


def run(cmd, **kw):
    p = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if p.returncode != 0:
        raise SystemExit(f"failed ({p.returncode}): {' '.join(cmd)}\n{p.stderr[-3000:]}")
    return p


def make_random_checkpoint(d, shape, seed=1):
    V, D, L, H, I, E, K = (shape[k] for k in "V D L H I E K".split())
    r = np.random.default_rng(seed)

    def n(*s, std=0.02):
        return r.standard_normal(size=s, dtype=np.float32) * np.float32(std)

    W = {"model.embed_tokens.weight": n(V, D), "model.norm.weight": 1 + n(D, std=0.1), "lm_head.weight": n(V, D)}
    for i in range(L):
        b = f"model.layers.{i}."
        W[b + "input_layernorm.weight"] = 1 + n(D, std=0.1)
        W[b + "post_attention_layernorm.weight"] = 1 + n(D, std=0.1)
        for p in "qkvo":
            W[b + f"self_attn.{p}_proj.weight"] = n(D, D)
        W[b + "mlp.moe.gate.wg.weight"] = n(E, D, std=0.2)  # a router with decided preferences
        for e in range(E):
            W[b + f"mlp.moe.experts.experts.{e}.up_proj.weight"] = n(2 * I, D)
            W[b + f"mlp.moe.experts.experts.{e}.down_proj.weight"] = n(D, I)
    cfg = {"vocab_size": V, "hidden_size": D, "intermediate_size": I, "num_hidden_layers": L,
           "num_attention_heads": H, "num_key_value_heads": H, "max_position_embeddings": 1024,
           "num_experts": [E], "moe_top_k": K, "moe_router": "topk", "moe_2layer_gate": False,
           "moe_use_logits_norm": False, "moe_use_mixtral_gating": True, "rms_norm_eps": 1e-6,
           "rope_theta": 10000.0, "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0}
    os.makedirs(d, exist_ok=True)
    st.save(os.path.join(d, "model.safetensors"), W)
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(cfg, f, indent=1)


def log_softmax(x):
    x = x.astype(np.float64)
    m = x.max()
    return x - m - np.log(np.exp(x - m).sum())


def llama_logits(debug, gguf, text, out_dir, threads, flash_attn):
    os.makedirs(out_dir, exist_ok=True)
    run([debug, "-m", gguf, "-p", text, "--save-logits", "--logits-output-dir", out_dir, "-t", str(threads),
         "-c", "1024", "-ngl", "0", "-ctk", "f32", "-ctv", "f32", "-fa", flash_attn], timeout=600)
    stem = os.path.splitext(os.path.basename(gguf))[0]
    logits = np.fromfile(os.path.join(out_dir, f"llamacpp-{stem}.bin"), dtype="<f4")
    ids = np.fromfile(os.path.join(out_dir, f"llamacpp-{stem}-tokens.bin"), dtype="<i4")
    return logits, [int(i) for i in ids]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--moepp", required=True)
    ap.add_argument("--llama-debug", required=True, help="llama.cpp's llama-debug binary (build it yourself)")
    ap.add_argument("--model", help="a vanilla checkpoint directory with tokenizer.model (default: random)")
    ap.add_argument("--shape", default="bench", choices=sorted(SHAPES))
    ap.add_argument("--dtypes", default="f32,bf16")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--flash-attn", default="off", choices=["on", "off", "auto"],
                    help="llama.cpp's -fa (its CPU flash attention computes in F16; off by default here)")
    ap.add_argument("--work", help="working directory (default: a new temporary one, removed afterwards)")
    ap.add_argument("--out", help="also append the JSON lines to this file")
    a = ap.parse_args()
    for exe in (a.moepp, a.llama_debug):
        if not os.access(exe, os.X_OK):
            raise SystemExit(f"not an executable: {exe}")
    work = a.work or tempfile.mkdtemp(prefix="moepp_agree_")
    os.makedirs(work, exist_ok=True)
    env = dict(os.environ, OMP_NUM_THREADS=str(a.threads))
    commit = subprocess.run(["git", "-C", ROOT, "describe", "--always", "--dirty"], capture_output=True,
                            text=True).stdout.strip() or "unknown"
    lines = []

    def emit(obj):
        obj.update({"commit": commit, "threads": a.threads, "load_avg_1m": os.getloadavg()[0]})
        s = json.dumps(obj)
        print(s, flush=True)
        lines.append(s)

    model = a.model
    if not model:
        model = os.path.join(work, "model-f32")
        t0 = time.time()
        make_random_checkpoint(model, SHAPES[a.shape])
        text = os.path.join(work, "tok_train.txt")
        with open(os.path.join(ROOT, "data", "slice", "train.txt"), encoding="utf-8") as f, \
                open(text, "w", encoding="utf-8") as g:
            g.write(f.read(1_000_000))
        run([a.moepp, "tokenizer", "train", "--input", text, "--vocab-size", "2000", "--out",
             os.path.join(model, "tokenizer.model")], env=env, timeout=1200)
        print(f"# random {a.shape} checkpoint and tokenizer in {time.time() - t0:.0f} s", file=sys.stderr)
    tok = os.path.join(model, "tokenizer.model")
    if not os.path.exists(tok):
        raise SystemExit(f"{model} has no tokenizer.model (needed to give both engines the same text)")

    for dt in [d for d in a.dtypes.split(",") if d]:
        src = model
        if dt == "bf16":  # both engines get the same bf16-rounded weights
            src = os.path.join(work, "model-bf16")
            if not os.path.exists(src):
                run([a.moepp, "convert", "--model", model, "--out", src, "--dtype", "bf16"], env=env, timeout=1200)
        elif dt != "f32":
            raise SystemExit(f"--dtypes: {dt} (f32 or bf16)")
        gguf = os.path.join(work, f"model-{dt}.gguf")
        run([a.moepp, "convert", "--to", "gguf", "--model", src, "--out", gguf, "--dtype", dt], env=env, timeout=1200)
        maxes, means, top1, raw, ids_same = [], [], [], [], []
        for pi, text in enumerate(PROMPTS):
            l_logits, ids = llama_logits(a.llama_debug, gguf, text, os.path.join(work, f"llama-{dt}-{pi}"), a.threads,
                                         a.flash_attn)
            enc = run([a.moepp, "tokenizer", "encode", "--model", tok, "--bos", "--text", text], env=env).stdout.split()
            same = [int(x) for x in enc] == ids
            dump = os.path.join(work, f"dump-{dt}-{pi}.safetensors")
            run([a.moepp, "dump", "--model", src, "--tokens", ",".join(map(str, ids)), "--out", dump], env=env,
                timeout=1200)
            m_logits = st.load(dump)["logits"].reshape(len(ids), -1)[-1]
            if m_logits.shape != l_logits.shape:
                raise SystemExit(f"vocabulary sizes differ: moepp {m_logits.shape}, llama.cpp {l_logits.shape}")
            lm, ll = log_softmax(m_logits), log_softmax(l_logits)
            d = np.abs(lm - ll)
            rec = {"check": "llama_cpp_logits_agreement", "dtype": dt, "flash_attn": a.flash_attn, "prompt": pi,
                   "tokens": len(ids),
                   "ids_identical_to_moepp_tokenizer": same, "max_abs_logprob_diff": float(d.max()),
                   "mean_abs_logprob_diff": float(d.mean()),
                   "top1_agrees": bool(int(np.argmax(lm)) == int(np.argmax(ll))),
                   "max_abs_logit_diff": float(np.abs(m_logits.astype(np.float64) - l_logits).max()),
                   "logit_scale": float(np.abs(m_logits).max())}
            if not same:
                rec["moepp_ids"] = [int(x) for x in enc]
                rec["llama_cpp_ids"] = ids
            emit(rec)
            maxes.append(rec["max_abs_logprob_diff"])
            means.append(rec["mean_abs_logprob_diff"])
            top1.append(rec["top1_agrees"])
            raw.append(rec["max_abs_logit_diff"])
            ids_same.append(same)
        emit({"check": "llama_cpp_logits_agreement_summary", "dtype": dt, "flash_attn": a.flash_attn,
              "prompts": len(PROMPTS),
              "positions_compared": "last position of each prompt", "max_abs_logprob_diff": max(maxes),
              "mean_abs_logprob_diff": float(np.mean(means)), "top1_agreement": sum(top1) / len(top1),
              "max_abs_logit_diff": max(raw), "ids_identical": sum(ids_same) / len(ids_same),
              "shape": a.shape if not a.model else a.model})
    if a.out:
        with open(a.out, "a") as f:
            f.write("\n".join(lines) + "\n")
    if not a.work:
        import shutil
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
