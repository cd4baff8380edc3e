#!/usr/bin/env python3
"""MoE++ against vanilla MoE at every weight dtype, measured in interleaved rounds: each round runs
`moepp bench infer` once over all --dtypes with both variants, the order of the variants alternating
from round to round (these machines drift 20-40 % between runs; a round's two variants are measured
minutes apart). Appends every JSON line to OUT (with the round number) and prints, per dtype, the
medians (min-max) of both variants' tokens/s and of the per-round MoE++ speedups, and the decode
speedup that the bytes read allow (vanilla's active bytes per decoded token / MoE++'s, from the
benchmark's own accounting: the speedup of a decode that streams its bytes at one rate).

With --ab=FLAG (e.g. --ab=--packed-prefill) every round runs twice, without and with that bench infer
flag (which goes first alternating from round to round), and the table has a row per dtype for each.
With --ab-moepp=PATH the second side is another moepp binary instead (e.g. a build of the commit
before a change), run with the same arguments.

usage: scripts/bench_infer_rounds.py OUT.jsonl [--rounds 5] [--dtypes f32,bf16,int8,q4] [--moepp build/moepp]
       [--ab=FLAG | --ab-moepp=PATH] [-- EXTRA bench infer ARGS]   (run on a quiet machine, OMP_NUM_THREADS=2 or as wanted)
       scripts/bench_infer_rounds.py OUT.jsonl --table   (only the table, from the lines OUT holds)
"""
import argparse
import json
import statistics
import subprocess
import sys


def fmt(x):
    return f"{x:.0f}" if abs(x) >= 100 else f"{x:.3g}"


def med(v):
    return f"{fmt(statistics.median(v))} ({fmt(min(v))}-{fmt(max(v))})"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--dtypes", default="f32,bf16,int8,q4")
    ap.add_argument("--moepp", default="build/moepp")
    ap.add_argument("--ab", default="", help="a bench infer flag: each round runs without and with it")
    ap.add_argument("--ab-moepp", default="", help="another moepp binary: each round runs both")
    ap.add_argument("--table", action="store_true", help="print the table of OUT's lines; run nothing")
    # Everything after a lone "--" goes to bench infer as it is (argparse would read its options).
    argv = sys.argv[1:]
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    a = ap.parse_args(argv[:argv.index("--")] if "--" in argv else argv)
    a.extra = extra
    if a.rounds < 1:
        sys.exit("bench_infer_rounds: --rounds must be >= 1")
    if a.ab and a.ab_moepp:
        sys.exit("bench_infer_rounds: --ab and --ab-moepp are alternatives; give one")
    res = {}  # (dtype, variant) -> list of (pp, tg, kv dtype, FFN experts per token, active bytes) per round

    def take(j):
        if j.get("bench") == "infer":
            label = j["dtype"] + (" " + j["ab"] if j.get("ab") else "")
            res.setdefault((label, j["variant"]), []).append(
                (j["prefill_tokens_per_s"], j["decode_tokens_per_s"], j.get("kv_dtype", "f32"),
                 j["ffn_experts_per_token"], j.get("active_bytes_per_token")))

    if a.table:
        try:
            with open(a.out, encoding="utf-8") as f:
                for n, line in enumerate(f, 1):
                    try:
                        take(json.loads(line))
                    except (json.JSONDecodeError, KeyError) as e:
                        sys.exit(f"bench_infer_rounds: {a.out}:{n}: not a bench infer JSON line ({e})")
        except OSError as e:
            sys.exit(f"bench_infer_rounds: {e}")
        a.rounds = 0
    with open(a.out, "a", encoding="utf-8") as out:
        for r in range(a.rounds):
            order = "moe,moepp" if r % 2 == 0 else "moepp,moe"
            # (label, binary, extra flag) per side; the unlabelled side is --moepp as given
            sides = [("", a.moepp, "")]
            if a.ab:
                sides.append((a.ab, a.moepp, a.ab))
            elif a.ab_moepp:
                sides.append(("moepp=" + a.ab_moepp, a.ab_moepp, ""))
            if r % 2 == 1:
                sides.reverse()
            for label, binary, flag in sides:
                cmd = [binary, "bench", "infer", "--dtypes", a.dtypes, "--variants", order, "--reps", "2"] + a.extra
                if flag:
                    cmd.append(flag)
                print(f"round {r + 1}/{a.rounds}: {' '.join(cmd)}", file=sys.stderr, flush=True)
                p = subprocess.run(cmd, stdout=subprocess.PIPE, text=True)
                if p.returncode != 0:
                    sys.exit(f"bench_infer_rounds: {' '.join(cmd)} exited with {p.returncode}")
                for line in p.stdout.splitlines():
                    j = json.loads(line)
                    j["round"] = r
                    if label:
                        j["ab"] = label
                    out.write(json.dumps(j, sort_keys=True) + "\n")
                    take(j)
                out.flush()
    print("| weights | KV cache | MoE prefill tok/s | MoE decode tok/s | MoE++ prefill tok/s | MoE++ decode tok/s "
          "| MoE++ speedup prefill | MoE++ speedup decode | bytes bound | MoE++ FFN experts / token |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    labels = sorted({k[0] for k in res}, key=lambda l: (a.dtypes.split(",").index(l.split()[0])
                                                         if l.split()[0] in a.dtypes.split(",") else 99, l))
    for dt in labels:
        m, p = res.get((dt, "moe"), []), res.get((dt, "moepp"), [])
        if not m or len(m) != len(p):
            continue
        sp = [x[0] / y[0] for x, y in zip(p, m)]
        st = [x[1] / y[1] for x, y in zip(p, m)]
        bb = [y[4] / x[4] for x, y in zip(p, m) if x[4] and y[4]]
        bound = f"{statistics.median(bb):.2f}" if bb else "-"
        print(f"| {dt} | {m[0][2]} | {med([x[0] for x in m])} | {med([x[1] for x in m])} | {med([x[0] for x in p])} "
              f"| {med([x[1] for x in p])} | {med(sp)} | {med(st)} | {bound} | {statistics.median([x[3] for x in p]):.2f} |")


if __name__ == "__main__":
    main()
