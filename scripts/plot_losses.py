#!/usr/bin/python3
"""Loss curves of one or more `moepp train` runs: reads RUN/log.jsonl of each run directory and writes
one PNG with the training loss (raw, faint, and smoothed by an exponential moving average) and the
validation loss (markers) against the step or the number of training tokens, one colour per run.
With --group-seeds, run directories whose names differ only in a trailing `-s<digits>` (exp-moe-s1,
exp-moe-s2, ...) are one preset, drawn as one colour: the mean over its seeds of the smoothed training
loss (at the steps all its seeds have) with the seeds' min-max range as a band, and the mean validation
loss with the seeds' range as error bars; a summary line per preset goes to stdout.
The legend sits to the right of the axes. Needs Debian's python3-matplotlib (Agg backend).

usage: /usr/bin/python3 scripts/plot_losses.py RUN [RUN ...] --out losses.png [--group-seeds]
           [--labels A,B,...] [--x step|tokens] [--smooth ALPHA] [--title TEXT]
"""
import argparse
import json
import os
import re
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

SEED_SUFFIX = re.compile(r"^(.+)-s[0-9]+$")


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


def default_alpha(n):
    """The default EMA factor for a series of n training losses."""
    return min(0.95, max(0.0, 1.0 - 10.0 / n))


def curves(run, xmode):
    """(train, val) of one run: lists of (step, x, loss) and (step, x, val_loss) in log order."""
    rows = read_log(run)
    tps = tokens_per_step(run)

    def xval(r):
        if xmode == "step":
            return r["step"]
        if "tokens" in r:
            return r["tokens"]
        if tps is None:
            sys.exit(f"plot_losses: {run}: log has no 'tokens' and train_config.json is missing; use --x step")
        return r["step"] * tps

    train = [(r["step"], xval(r), r["loss"]) for r in rows if "loss" in r]
    val = [(r["step"], xval(r), r["val_loss"]) for r in rows if r.get("val_loss") is not None]
    return train, val


def run_name(run):
    return os.path.basename(os.path.normpath(run))


def group_runs(runs):
    """{preset: [run, ...]} in order of first appearance; the preset is the name without -s<digits>."""
    groups, seen = {}, set()
    for run in runs:
        key = os.path.normpath(os.path.abspath(run))
        if key in seen:
            sys.exit(f"plot_losses: {run}: given twice (each seed directory once with --group-seeds)")
        seen.add(key)
        m = SEED_SUFFIX.match(run_name(run))
        groups.setdefault(m.group(1) if m else run_name(run), []).append(run)
    return groups


def by_step(points, values=None):
    """{step: (x, value)} of (step, x, value) points, the last record of a step winning (a resumed run
    logs the steps after its checkpoint again); `values` replaces the points' values when given."""
    out = {}
    for i, (step, x, v) in enumerate(points):
        out[step] = (x, v if values is None else values[i])
    return out


def seed_stats(preset, seeds, what):
    """Steps all seeds have, their x, and the mean/min/max over the seeds: seeds is [(run, {step: (x, v)})]."""
    common = set(seeds[0][1])
    for _, d in seeds[1:]:
        common &= set(d)
    if not common:
        names = ", ".join(run for run, _ in seeds)
        sys.exit(f"plot_losses: preset {preset}: its seeds ({names}) have no {what} step in common")
    steps = sorted(common)
    xs = []
    for s in steps:
        x0 = seeds[0][1][s][0]
        for run, d in seeds[1:]:
            if d[s][0] != x0:
                sys.exit(f"plot_losses: {run}: step {s} is at x = {d[s][0]} but {seeds[0][0]} has {x0}; "
                         "the seeds of a preset must have the same tokens per step (or use --x step)")
        xs.append(x0)
    v = np.array([[d[s][1] for s in steps] for _, d in seeds], dtype=float)
    longest = max(len(d) for _, d in seeds)
    if len(steps) < longest:
        print(f"plot_losses: note: preset {preset}: {what} loss drawn at the {len(steps)} steps all "
              f"{len(seeds)} seeds have (the longest has {longest})", file=sys.stderr)
    return steps, xs, v.mean(axis=0), v.min(axis=0), v.max(axis=0)


def plot_runs(ax, args, labels, colors):
    """One colour per run: raw and smoothed training loss, validation loss."""
    for i, (run, label) in enumerate(zip(args.runs, labels)):
        color = colors[i % len(colors)]
        train, val = curves(run, args.x)
        if train:
            _, xs, ys = zip(*train)
            alpha = args.smooth if args.smooth >= 0 else default_alpha(len(ys))
            ax.plot(xs, ys, color=color, alpha=0.25, lw=0.8)
            ax.plot(xs, ema(ys, alpha), color=color, lw=1.8, label=f"{label} train (EMA {alpha:.2f})")
        if val:
            _, xs, ys = zip(*val)
            ax.plot(xs, ys, "o--", color=color, ms=4, lw=1.0, label=f"{label} val (last {ys[-1]:.3f})")


def plot_presets(ax, args, groups, labels, colors):
    """One colour per preset: mean over its seeds with the seeds' min-max range. Returns the legend's
    handles, each preset's training line next to its validation markers."""
    handles = []
    for i, ((preset, runs), label) in enumerate(zip(groups.items(), labels)):
        color = colors[i % len(colors)]
        n = len(runs)
        label = f"{label} ({n} seed{'s' if n != 1 else ''})"
        per_seed = [(run, *curves(run, args.x)) for run in runs]
        summary = [f"{preset}: {n} seed{'s' if n != 1 else ''}"]

        have_train = sum(1 for _, train, _ in per_seed if train)
        if 0 < have_train < n:
            missing = next(run for run, train, _ in per_seed if not train)
            sys.exit(f"plot_losses: {missing}: no training loss logged, unlike the other seeds of preset {preset}")
        if have_train:
            alpha = args.smooth if args.smooth >= 0 else default_alpha(min(len(t) for _, t, _ in per_seed))
            # Smooth each seed's whole series first, then average the smoothed values.
            seeds = [(run, by_step(train, ema([v for _, _, v in train], alpha)))
                     for run, train, _ in per_seed]
            steps, xs, mean, lo, hi = seed_stats(preset, seeds, "training")
            if n > 1:
                ax.fill_between(xs, lo, hi, color=color, alpha=0.2, lw=0)
            handles += ax.plot(xs, mean, color=color, lw=1.8, label=f"{label} train (EMA {alpha:.2f})")
            summary.append(f"train (EMA {alpha:.2f}) at step {steps[-1]}: {mean[-1]:.4f} "
                           f"[{lo[-1]:.4f}, {hi[-1]:.4f}]")

        have_val = sum(1 for _, _, val in per_seed if val)
        if 0 < have_val < n:
            missing = next(run for run, _, val in per_seed if not val)
            sys.exit(f"plot_losses: {missing}: no validation loss logged, unlike the other seeds of preset {preset}")
        if have_val:
            seeds = [(run, by_step(val)) for run, _, val in per_seed]
            steps, xs, mean, lo, hi = seed_stats(preset, seeds, "validation")
            # (clipped at 0: the mean of equal values can differ from them in the last bit)
            yerr = [np.maximum(mean - lo, 0.0), np.maximum(hi - mean, 0.0)]
            handles.append(ax.errorbar(xs, mean, yerr=yerr, fmt="o--", color=color, ms=4, lw=1.0, capsize=3,
                                       label=f"{label} val (last {mean[-1]:.3f})"))
            summary.append(f"val at step {steps[-1]}: {mean[-1]:.4f} [{lo[-1]:.4f}, {hi[-1]:.4f}]")
        print("; ".join(summary))
    return handles


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+", help="run directories (each with log.jsonl)")
    ap.add_argument("--out", required=True, help="PNG to write")
    ap.add_argument("--group-seeds", action="store_true",
                    help="one curve per preset (run directories differing only in a trailing -s<digits>): "
                         "mean over the seeds with their min-max range")
    ap.add_argument("--labels", help="comma-separated labels, one per run, or one per preset with --group-seeds "
                                     "(default: directory names, or preset names)")
    ap.add_argument("--x", choices=("step", "tokens"), default="step", help="x axis")
    ap.add_argument("--smooth", type=float, default=-1.0,
                    help="EMA factor for the training loss, in [0, 1) (default: 1 - 10/steps, at most 0.95)")
    ap.add_argument("--title", default="Training and validation loss")
    args = ap.parse_args()
    if args.smooth != -1.0 and not 0.0 <= args.smooth < 1.0:
        sys.exit("plot_losses: --smooth must be in [0, 1)")
    if args.group_seeds:
        groups = group_runs(args.runs)
        labels = args.labels.split(",") if args.labels else list(groups)
        if len(labels) != len(groups):
            sys.exit(f"plot_losses: {len(labels)} labels for {len(groups)} presets ({', '.join(groups)})")
    else:
        labels = args.labels.split(",") if args.labels else [run_name(r) for r in args.runs]
        if len(labels) != len(args.runs):
            sys.exit(f"plot_losses: {len(labels)} labels for {len(args.runs)} runs")

    fig, ax = plt.subplots(figsize=(8, 5))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    if args.group_seeds:
        handles = plot_presets(ax, args, groups, labels, colors)
    else:
        handles = None
        plot_runs(ax, args, labels, colors)
    ax.set_xlabel("step" if args.x == "step" else "training tokens")
    ax.set_ylabel("cross-entropy (nats/token)")
    ax.set_title(args.title)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    # Outside the axes (added after the layout, which keeps the axes' size), so that it never hides a
    # curve; bbox_inches="tight" widens the saved image to take it in.
    ax.legend(handles=handles, fontsize=8, bbox_to_anchor=(1.02, 1), loc="upper left", borderaxespad=0.0)
    out_dir = os.path.dirname(os.path.abspath(args.out))
    os.makedirs(out_dir, exist_ok=True)
    fig.savefig(args.out, dpi=110, bbox_inches="tight")
    plt.close(fig)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
