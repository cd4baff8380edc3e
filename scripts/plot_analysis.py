#!/usr/bin/python3
"""Plots of a `moepp analyze` report (docs/analysis.md): reads analysis.json and writes, into --out,
  ffn_experts_by_layer.png  mean FFN experts per token per layer (with / without gating residual)
  ffn_experts_by_token.png  mean FFN experts of the most frequent tokens (cf. the paper's Figure 5)
  score_histograms.png      top-1 / top-2 routing scores with vs without gating residual (cf. Figure 6)
  expert_types.png          share of slots per expert type (FFN / constant / copy / zero) per layer
Needs Debian's python3-matplotlib (Agg backend, no display).

usage: /usr/bin/python3 scripts/plot_analysis.py OUTDIR/analysis.json [--out OUTDIR]
"""
import argparse
import json
import os
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

WITH = "#1f77b4"
WITHOUT = "#d62728"


def token_label(t):
    """A readable label for a vocabulary token: its piece, with SentencePiece's word marker shown as '_'."""
    piece = t.get("piece", str(t["id"]))
    label = piece.replace("\u2581", "_").replace("\n", "\\n")
    return label if label.strip() else repr(piece)


def plot_by_layer(a, path):
    ffn = a["ffn_experts_per_token"]
    layers = list(range(len(ffn["per_layer"])))
    k = a["model"]["top_k"]
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(layers, ffn["per_layer"], "o-", color=WITH, label=f"with gating residual (mean {ffn['mean']:.3f})")
    nores = a.get("ffn_experts_per_token_no_residual")
    if nores:
        ax.plot(layers, nores["per_layer"], "s--", color=WITHOUT,
                label=f"gating residual removed (mean {nores['mean']:.3f})")
    if a["model"]["router"] != "relu":
        ax.axhline(k, color="gray", lw=0.8, ls=":", label=f"top-k = {k}")
    ax.set_xlabel("layer")
    ax.set_ylabel("FFN experts per token")
    ax.set_title(f"Mean FFN experts activated per token ({a['tokens']} tokens)")
    ax.set_xticks(layers)
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_by_token(a, path):
    toks = a["tokens_by_frequency"]
    fig, ax = plt.subplots(figsize=(max(6, 0.32 * len(toks) + 2), 4.5))
    if toks:
        xs = range(len(toks))
        ax.bar(xs, [t["mean_ffn_experts"] for t in toks], color=WITH)
        ax.set_xticks(list(xs))
        ax.set_xticklabels([token_label(t) for t in toks], rotation=70, ha="right", fontsize=8)
        mean = a["ffn_experts_per_token"]["mean"]
        ax.axhline(mean, color="black", lw=0.8, ls="--")
        lo = min(t["mean_ffn_experts"] for t in toks)
        hi = max(t["mean_ffn_experts"] for t in toks)
        ax.set_ylim(max(0.0, lo - 0.15 * (hi - lo + 0.1)), hi + 0.15 * (hi - lo + 0.1))
    else:
        ax.text(0.5, 0.5, "no tokens", ha="center", va="center", transform=ax.transAxes)
    ax.set_ylabel("FFN experts per token (mean over layers)")
    mean = a["ffn_experts_per_token"]["mean"]
    ax.set_title(f"FFN experts per token for the {len(toks)} most frequent tokens (dashed: all tokens, {mean:.3f})")
    ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_histograms(a, path):
    h = a["score_histograms"]
    fig, axes = plt.subplots(2, 2, figsize=(10, 7), squeeze=False)
    edges = h["edges"]
    width = edges[1] - edges[0] if len(edges) > 1 else 1.0
    if not h["with_residual"]:
        for ax in axes.flat:
            ax.axis("off")
        axes[0][0].text(0.5, 0.5, f"no routing scores for the {a['model']['router']} router", ha="center", va="center")
        fig.savefig(path, dpi=110)
        plt.close(fig)
        return
    n_layers = a["model"]["n_layers"]
    last = n_layers - 1
    for col, rank in enumerate(("top1", "top2")):
        for row, (title, pick) in enumerate((("all layers", lambda d: d["overall"]),
                                             (f"layer {last}", lambda d: d["per_layer"][last]))):
            ax = axes[row][col]
            with_h = h["with_residual"].get(rank)
            if not with_h:
                ax.text(0.5, 0.5, "top-k < 2: no second score", ha="center", va="center", transform=ax.transAxes)
                ax.axis("off")
                continue
            series = [("with gating residual", with_h, WITH)]
            nores = h.get("without_residual")
            if nores and nores.get(rank):
                series.append(("gating residual removed", nores[rank], WITHOUT))
            for label, d, color in series:
                counts = pick(d)
                total = sum(counts) or 1
                dens = [c / total for c in counts]
                mean = d["mean"] if row == 0 else d["mean_per_layer"][last]
                ax.stairs(dens, edges, color=color, lw=1.6, label=f"{label} (mean {mean:.3f})")
            ax.set_xlim(0, 1)
            ax.set_xlabel(f"{'highest' if rank == 'top1' else 'second-highest'} routing score p")
            ax.set_ylabel(f"fraction of tokens (bin width {width:.2f})")
            ax.set_title(f"{'Top-1' if rank == 'top1' else 'Top-2'} score, {title}")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
    fig.suptitle("Routing score distributions with vs without gating residual")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_expert_types(a, path):
    f = a["expert_type_fraction"]
    layers = list(range(len(f["ffn"])))
    fig, ax = plt.subplots(figsize=(7, 4))
    bottom = [0.0] * len(layers)
    for name, color in (("ffn", "#1f77b4"), ("constant", "#2ca02c"), ("copy", "#ff7f0e"), ("zero", "#7f7f7f")):
        vals = f[name]
        ax.bar(layers, vals, bottom=bottom, color=color, label=name)
        bottom = [b + v for b, v in zip(bottom, vals)]
    ax.set_xlabel("layer")
    ax.set_ylabel("fraction of routing slots")
    ax.set_title("Slots per expert type")
    ax.set_xticks(layers)
    ax.set_ylim(0, 1.0)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("analysis", help="analysis.json written by `moepp analyze`")
    ap.add_argument("--out", help="output directory (default: the directory of analysis.json)")
    args = ap.parse_args()
    try:
        with open(args.analysis, encoding="utf-8") as f:
            a = json.load(f)
    except (OSError, ValueError) as e:
        sys.exit(f"plot_analysis: {args.analysis}: {e}")
    if a.get("format") != "moepp-routing-analysis":
        sys.exit(f"plot_analysis: {args.analysis}: not a moepp routing analysis (field 'format')")
    out = args.out or os.path.dirname(os.path.abspath(args.analysis))
    os.makedirs(out, exist_ok=True)
    written = []
    for name, fn in (("ffn_experts_by_layer.png", plot_by_layer), ("ffn_experts_by_token.png", plot_by_token),
                     ("score_histograms.png", plot_histograms), ("expert_types.png", plot_expert_types)):
        path = os.path.join(out, name)
        fn(a, path)
        written.append(path)
    for p in written:
        print(f"wrote {p}")


if __name__ == "__main__":
    main()
