#!/usr/bin/python3
"""Loss curves of one or more `moepp train` runs: reads RUN/log.jsonl of each run directory and writes
one PNG with the training loss (raw, faint, and smoothed by an exponential moving average) and the
validation loss (markers) against the step or the number of training tokens, one colour per run.
Needs Debian's python3-matplotlib (Agg backend).

usage: /usr/bin/python3 scripts/plot_losses.py RUN [RUN ...] --out losses.png
           [--labels A,B,...] [--x step|tokens] [--smooth ALPHA] [--title TEXT]
"""
import argparse
import json
import os
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def tokens_per_step(run):
    """batch_size * seq_len * grad_accum of the run's train_config.json (None when unknown)."""
    try:
        with open(os.path.join(run, "train_config.json"), encoding="utf-8") as f:
            c = json.load(f)
        return int(c.get("batch_size", 8)) * int(c.get("seq_len", 128)) * int(c.get("grad_accum", 1))
    except (OSError, ValueError, TypeError):
        return None


def read_log(run):
    path = os.path.join(run, "log.jsonl")
    rows = []
    try:
        with open(path, encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                line = line.strip()
                if not line:
                    continue
                try:
                    rows.append(json.loads(line))
                except ValueError as e:
                    sys.exit(f"plot_losses: {path}:{n}: {e}")
    except OSError as e:
        sys.exit(f"plot_losses: {path}: {e}")
    rows = [r for r in rows if "step" in r]
    if not rows:
        sys.exit(f"plot_losses: {path}: no steps logged")
    return rows


def ema(values, alpha):
    """Exponential moving average with bias correction (as TensorBoard's smoothing)."""
    out, m = [], 0.0
    for i, v in enumerate(values, 1):
        m = alpha * m + (1 - alpha) * v
        out.append(m / (1 - alpha ** i) if alpha > 0 else v)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+", help="run directories (each with log.jsonl)")
    ap.add_argument("--out", required=True, help="PNG to write")
    ap.add_argument("--labels", help="comma-separated labels, one per run (default: directory names)")
    ap.add_argument("--x", choices=("step", "tokens"), default="step", help="x axis")
    ap.add_argument("--smooth", type=float, default=-1.0,
                    help="EMA factor for the training loss, in [0, 1) (default: 1 - 10/steps, at most 0.95)")
    ap.add_argument("--title", default="Training and validation loss")
    args = ap.parse_args()
    if args.smooth != -1.0 and not 0.0 <= args.smooth < 1.0:
        sys.exit("plot_losses: --smooth must be in [0, 1)")
    labels = args.labels.split(",") if args.labels else [os.path.basename(os.path.normpath(r)) for r in args.runs]
    if len(labels) != len(args.runs):
        sys.exit(f"plot_losses: {len(labels)} labels for {len(args.runs)} runs")

    fig, ax = plt.subplots(figsize=(8, 5))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (run, label) in enumerate(zip(args.runs, labels)):
        rows = read_log(run)
        color = colors[i % len(colors)]
        tps = tokens_per_step(run)

        def xval(r):
            if args.x == "step":
                return r["step"]
            if "tokens" in r:
                return r["tokens"]
            if tps is None:
                sys.exit(f"plot_losses: {run}: log has no 'tokens' and train_config.json is missing; use --x step")
            return r["step"] * tps

        train = [(xval(r), r["loss"]) for r in rows if "loss" in r]
        val = [(xval(r), r["val_loss"]) for r in rows if r.get("val_loss") is not None]
        if train:
            xs, ys = zip(*train)
            alpha = args.smooth if args.smooth >= 0 else min(0.95, max(0.0, 1.0 - 10.0 / len(ys)))
            ax.plot(xs, ys, color=color, alpha=0.25, lw=0.8)
            ax.plot(xs, ema(ys, alpha), color=color, lw=1.8, label=f"{label} train (EMA {alpha:.2f})")
        if val:
            xs, ys = zip(*val)
            ax.plot(xs, ys, "o--", color=color, ms=4, lw=1.0, label=f"{label} val (last {ys[-1]:.3f})")
    ax.set_xlabel("step" if args.x == "step" else "training tokens")
    ax.set_ylabel("cross-entropy (nats/token)")
    ax.set_title(args.title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    out_dir = os.path.dirname(os.path.abspath(args.out))
    os.makedirs(out_dir, exist_ok=True)
    fig.savefig(args.out, dpi=110)
    plt.close(fig)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
