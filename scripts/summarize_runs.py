#!/usr/bin/python3
"""Summarises training runs (their log.jsonl and train_config.json) as a Markdown table: final
validation loss (nats/token, bits/byte), mean FFN experts per token (average over layers of the last
50 steps), expert forward FLOPs per token, and training wall time; runs that differ only in seed are
averaged (mean ± half-range), with each seed's validation loss listed. Usage: summarize_runs.py RUN_DIR [RUN_DIR ...]"""
import json
import os
import re
import sys
from collections import defaultdict


def load(run):
    recs = [json.loads(l) for l in open(os.path.join(run, "log.jsonl")) if l.strip()]
    cfg = json.load(open(os.path.join(run, "train_config.json")))
    if not recs:
        raise SystemExit(f"{run}: empty log.jsonl")
    m = cfg["model"]
    evals = [r for r in recs if "val_loss" in r]
    last = recs[-50:]
    ffn = sum(sum(r["ffn_experts_per_token"]) / len(r["ffn_experts_per_token"]) for r in last) / len(last)
    flops = ffn * 6 * m["hidden_size"] * m["intermediate_size"] * m["num_hidden_layers"]
    ntok = cfg["batch_size"] * cfg["seq_len"] * cfg.get("grad_accum", 1)
    wall = sum(ntok / r["tokens_per_s"] for r in recs)
    seed = cfg.get("seed", "?")
    return {"seed": seed, "val_loss": evals[-1]["val_loss"], "bpb": evals[-1]["val_bits_per_byte"], "ffn": ffn,
            "flops": flops, "wall": wall, "steps": recs[-1]["step"], "tokens": recs[-1]["tokens"]}


def main():
    groups = defaultdict(list)
    for run in sys.argv[1:]:
        name = re.sub(r"-s\d+$", "", os.path.basename(os.path.normpath(run)))
        groups[name].append(load(run))
    print("| preset | seeds | steps (tokens) | val loss (nats/token) | per seed | val bits/byte | FFN experts/token | expert MFLOP/token (fwd) | wall (min) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name in sorted(groups):
        rs = groups[name]

        def f(key, scale=1.0, digits=3):
            vals = [r[key] * scale for r in rs]
            mean = sum(vals) / len(vals)
            half = (max(vals) - min(vals)) / 2
            return f"{mean:.{digits}f} ± {half:.{digits}f}" if len(vals) > 1 else f"{mean:.{digits}f}"
        per_seed = ", ".join(f"{r['val_loss']:.3f}" for r in sorted(rs, key=lambda r: str(r["seed"])))
        print(f"| {name} | {len(rs)} | {rs[0]['steps']} ({rs[0]['tokens']}) | {f('val_loss')} | {per_seed} | {f('bpb')} | {f('ffn', digits=2)} "
              f"| {f('flops', 1e-6, 1)} | {f('wall', 1 / 60, 1)} |")


if __name__ == "__main__":
    main()
