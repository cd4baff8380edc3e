#!/usr/bin/python3
"""Side-by-side figures of several `moepp analyze` reports (docs/results.md): for every preset (run
directories that differ only in their -s<seed> suffix are averaged), writes into --out
  results_ffn_by_layer.png     mean FFN experts per token in each layer (cf. the paper's Figure 5, left)
  results_ffn_by_token.png     mean FFN experts of the 15 most frequent tokens, per MoE++ preset
  results_expert_types.png     share of slots per expert type (FFN / constant / copy / zero) per preset
and prints a Markdown table of the same numbers (--prefix replaces "results_" in the file names).
Needs Debian's python3-matplotlib.

usage: /usr/bin/python3 scripts/compare_analyses.py RUN_DIR [RUN_DIR ...] --out DIR [--prefix results_]
"""
import argparse
import json
import os
import re
from collections import defaultdict

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("runs", nargs="+")
    ap.add_argument("--out", required=True)
    ap.add_argument("--top", type=int, default=15)
    ap.add_argument("--prefix", default="results_", help="file name prefix of the figures")
    a = ap.parse_args()
    groups = defaultdict(list)
    for run in a.runs:
        path = os.path.join(run, "analysis", "analysis.json")
        if not os.path.exists(path):
            raise SystemExit(f"{path}: missing (run `moepp analyze` first)")
        name = re.sub(r"-s\d+$", "", os.path.basename(os.path.normpath(run)))
        groups[name].append(json.load(open(path)))
    names = sorted(groups)
    os.makedirs(a.out, exist_ok=True)

    def mean(xs):
        return sum(xs) / len(xs)

    # One colour per preset, the same in every figure (tab10 repeats after 10 presets: tab20 then).
    palette = plt.get_cmap("tab10" if len(names) <= 10 else "tab20").colors

    def colour(n):
        return palette[names.index(n) % len(palette)]

    # FFN experts per layer.
    L = len(groups[names[0]][0]["ffn_experts_per_token"]["per_layer"])
    fig, ax = plt.subplots(figsize=(9, 3.5))
    width = 0.8 / len(names)
    print("| preset | FFN experts/token by layer | mean | constant / copy / zero share of slots |")
    print("|---|---|---|---|")
    for i, n in enumerate(names):
        per = [mean([r["ffn_experts_per_token"]["per_layer"][l] for r in groups[n]]) for l in range(L)]
        ax.bar([l + i * width for l in range(L)], per, width, label=n, color=colour(n))
        et = groups[n][0]["expert_type_fraction"]
        shares = []
        for k in ("constant", "copy", "zero"):
            shares.append(mean([mean(r["expert_type_fraction"][k]) for r in groups[n]]) if k in et else 0.0)
        print(f"| {n} | {' / '.join(f'{x:.2f}' for x in per)} | {mean(per):.2f} | "
              f"{' / '.join(f'{x:.2f}' for x in shares)} |")
    ax.set_xticks([l + 0.4 - width / 2 for l in range(L)])
    ax.set_xticklabels([f"layer {l}" for l in range(L)])
    ax.set_ylabel("FFN experts per token")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # outside: never over the bars
    fig.tight_layout()
    fig.savefig(os.path.join(a.out, a.prefix + "ffn_by_layer.png"), dpi=120)

    # FFN experts of the most frequent tokens, MoE++ presets (the vanilla MoE always uses K).
    pp = [n for n in names if groups[n][0]["model"].get("router") == "moepp"]
    if pp:
        first = groups[pp[0]][0]["tokens_by_frequency"][: a.top]
        ids = [t["id"] for t in first]
        labels = [t.get("piece", str(t["id"])).replace("\u2581", "_") for t in first]
        fig, ax = plt.subplots(figsize=(11, 3.5))
        width = 0.8 / len(pp)
        for i, n in enumerate(pp):
            vals = []
            for tid in ids:
                v = [t["mean_ffn_experts"] for r in groups[n] for t in r["tokens_by_frequency"] if t["id"] == tid]
                vals.append(mean(v) if v else 0.0)
            ax.bar([j + i * width for j in range(len(ids))], vals, width, label=n, color=colour(n))
        ax.set_xticks([j + 0.4 - width / 2 for j in range(len(ids))])
        ax.set_xticklabels(labels, rotation=60, fontsize=8)
        ax.set_ylabel("FFN experts per token")
        ax.set_title("most frequent validation tokens")
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
        fig.tight_layout()
        fig.savefig(os.path.join(a.out, a.prefix + "ffn_by_token.png"), dpi=120)

    # Expert type shares.
    fig, ax = plt.subplots(figsize=(8, 4))
    bottom = [0.0] * len(names)
    for k in ("ffn", "constant", "copy", "zero"):
        vals = [mean([mean(r["expert_type_fraction"][k]) for r in groups[n]]) if k in groups[n][0]["expert_type_fraction"]
                else 0.0 for n in names]
        ax.bar(range(len(names)), vals, bottom=bottom, label=k)
        bottom = [b + v for b, v in zip(bottom, vals)]
    ax.set_xticks(range(len(names)))
    ax.set_xticklabels(names, fontsize=8, rotation=30, ha="right")
    ax.set_ylabel("share of slots")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    fig.savefig(os.path.join(a.out, a.prefix + "expert_types.png"), dpi=120)


if __name__ == "__main__":
    main()
