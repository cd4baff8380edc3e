"""Scaffolding shared by the Python engine tests (tests/python/test_*.py; not itself a test):

  parse_test_args(...)          -> (args, exe): --moepp PATH (exe: its absolute path), -k SUBSTRING, -v
  moepp_binary_missing(exe)     -> True, after printing a failed tally, when the binary is not there
  Tally                         counts passed / failed cases, prints their PASS / FAIL lines and the final
                                `N passed, M failed` line (after the run time, if asked); exit code 1 when
                                any failed
  write_safetensors_weights(d, W, dtype, shards) / write_checkpoint(d, config, W, dtype, shards)
                                a checkpoint directory (config.json + model.safetensors, or shards with
                                model.safetensors.index.json)
  write_slice_corpus(tmp, chars) and write_tiny_train_config(tmp, train, valid, ...)
                                the tiny corpus and `moepp train` config of the end-to-end training tests
  npm_ci(src_dir, work, files, package, env)
                                the pinned npm packages of a Node-driven test (tests/browser, tests/sdk)
                                installed into a work directory
"""
import argparse
import json
import os
import shutil
import subprocess
import time

import numpy as np

import safetensors_np as st

HERE = os.path.dirname(os.path.abspath(__file__))
SLICE_TRAIN = os.path.normpath(os.path.join(HERE, "..", "..", "data", "slice", "train.txt"))


def parse_test_args(case_filter=True, verbose=True, add_options=None):
    """Parses an engine test's command line: --moepp PATH (the binary under test) and, unless turned off,
    -k SUBSTRING (run only the cases whose name contains it) and -v (details of passing cases too);
    add_options(parser) adds the test's own. Returns (args, absolute path of the binary)."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--moepp", required=True, help="the moepp binary under test")
    if case_filter:
        ap.add_argument("-k", default="", help="run only the cases whose name contains this")
    if verbose:
        ap.add_argument("-v", action="store_true", help="print details of passing cases too")
    if add_options:
        add_options(ap)
    args = ap.parse_args()
    return args, os.path.abspath(args.moepp)


def moepp_binary_missing(exe):
    """True when `exe` does not exist, after printing why and the failed tally CTest reads."""
    if os.path.exists(exe):
        return False
    print(f"moepp binary not found: {exe}")
    print("0 passed, 1 failed")
    return True


class Tally:
    """Counts cases as they pass or fail and prints one PASS / FAIL line per case; with print_run_time,
    finish() also prints the seconds since the Tally was made."""

    def __init__(self, print_run_time=False):
        self.passed = self.failed = 0
        self.started = time.time() if print_run_time else None

    def ok(self, line):
        self.passed += 1
        print(f"PASS {line}", flush=True)

    def fail(self, line):
        self.failed += 1
        print(f"FAIL {line}", flush=True)

    def record(self, name, ok, detail, verbose=False):
        """A case whose outcome is known: `detail` is printed on failure, and on success when verbose."""
        if ok:
            self.ok(name + (f": {detail}" if verbose else ""))
        else:
            self.fail(f"{name}: {detail}")

    def run_each(self, *cases):
        """Runs each function as the case of its name; any exception it raises (a failed assert included)
        fails the case."""
        for fn in cases:
            try:
                fn()
            except Exception as e:  # noqa: BLE001
                self.fail(f"{fn.__name__}: {e}")
            else:
                self.ok(fn.__name__)

    def finish(self):
        """Prints `N passed, M failed`; returns the exit code (1 when any case failed)."""
        if self.started is not None:
            print(f"({time.time() - self.started:.1f} s)")
        print(f"{self.passed} passed, {self.failed} failed")
        return 1 if self.failed else 0


def write_safetensors_weights(d, W, dtype, shards=1):
    """W {name: np array} stored as `dtype` in d/model.safetensors, or (shards > 1) split in order into
    model-0000i-of-0000n.safetensors with a model.safetensors.index.json naming each tensor's shard."""
    names = list(W)
    if shards <= 1:
        st.save(os.path.join(d, "model.safetensors"), W, dtypes={k: dtype for k in names})
        return
    weight_map = {}
    for s, idx in enumerate(np.array_split(np.arange(len(names)), shards)):
        fn = f"model-{s + 1:05d}-of-{shards:05d}.safetensors"
        part = {names[i]: W[names[i]] for i in idx}
        st.save(os.path.join(d, fn), part, dtypes={k: dtype for k in part})
        weight_map.update({k: fn for k in part})
    with open(os.path.join(d, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": 0}, "weight_map": weight_map}, f)


def write_checkpoint(d, config, W, dtype="F32", shards=1):
    """A checkpoint directory d: config.json and the weights (write_safetensors_weights)."""
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(config, f, indent=1)
    write_safetensors_weights(d, W, dtype, shards)


def write_slice_corpus(tmp, chars):
    """The first `chars` characters of data/slice/train.txt, split by document 9:1 into tmp/train.txt
    and tmp/valid.txt; returns (train path, valid path)."""
    with open(SLICE_TRAIN, encoding="utf-8") as f:
        text = f.read(chars)
    docs = [d for d in text.split("\n\n") if d.strip()]
    cut = max(1, len(docs) * 9 // 10)
    train, valid = os.path.join(tmp, "train.txt"), os.path.join(tmp, "valid.txt")
    with open(train, "w", encoding="utf-8") as f:
        f.write("\n\n".join(docs[:cut]))
    with open(valid, "w", encoding="utf-8") as f:
        f.write("\n\n".join(docs[cut:]))
    return train, valid


def write_tiny_train_config(tmp, train, valid, layers, tokenizer_vocab, steps, eval_every, ckpt_every,
                            sample_tokens, model_extra=None, name="train.json"):
    """A `moepp train` config for a tiny model (D 32, I 48, 4 heads, 2 KV heads, 8 experts, top-2, 64
    positions) trained on `train` (batch 4 x 32 tokens, lr 3e-3 -> 3e-4, 2 warmup steps, 2 eval batches);
    model_extra updates the model section. Written as tmp/name; returns its path."""
    cfg = {
        "model": {"hidden_size": 32, "intermediate_size": 48, "num_hidden_layers": layers, "num_attention_heads": 4,
                  "num_key_value_heads": 2, "num_experts": [8], "moe_top_k": 2, "max_position_embeddings": 64,
                  # the 7B checkpoint's router flags, as the presets in configs/ spell them out
                  "moe_2layer_gate": False, "moe_use_logits_norm": True, "moe_feature_no_mul_topk": True},
        "train_text": train, "valid_text": valid, "tokenizer_vocab": tokenizer_vocab,
        "batch_size": 4, "seq_len": 32, "steps": steps, "lr": 3e-3, "min_lr": 3e-4, "warmup_steps": 2,
        "eval_every": eval_every, "eval_batches": 2, "ckpt_every": ckpt_every, "sample_tokens": sample_tokens,
    }
    cfg["model"].update(model_extra or {})
    path = os.path.join(tmp, name)
    with open(path, "w") as f:
        json.dump(cfg, f)
    return path


def npm_ci(src_dir, work, files, package, env=None):
    """Copies `files` (package.json, package-lock.json, the test's scripts) from src_dir into work and
    installs the lock file's packages into work/node_modules with `npm ci --ignore-scripts` (no install
    scripts run), skipped when `package` is already there at its locked version. Raises RuntimeError
    naming what is missing (node, npm) or with npm's output."""
    missing = [t for t in ("node", "npm") if shutil.which(t) is None]
    if missing:
        raise RuntimeError(f"missing {', '.join(missing)}: install them with `bash scripts/setup.sh`")
    os.makedirs(work, exist_ok=True)
    for f in files:
        shutil.copyfile(os.path.join(src_dir, f), os.path.join(work, f))
    with open(os.path.join(src_dir, "package-lock.json")) as f:
        want = json.load(f)["packages"][f"node_modules/{package}"]["version"]
    have = None
    try:
        with open(os.path.join(work, "node_modules", package, "package.json")) as f:
            have = json.load(f)["version"]
    except (OSError, ValueError, KeyError):
        pass
    if have == want:
        return
    p = subprocess.run(["npm", "ci", "--ignore-scripts", "--no-audit", "--no-fund"], cwd=work,
                       env=dict(os.environ, **(env or {})), capture_output=True, text=True, timeout=300)
    if p.returncode != 0:
        raise RuntimeError(f"npm ci ({package} {want}) failed in {work}:\n{p.stdout}\n{p.stderr}")
