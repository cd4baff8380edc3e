#!/usr/bin/env python3
"""Decode under CPU contention: `moepp bench infer` (decode-heavy: --prompt 16 --gen 64) with OpenMP
settings side by side, on a quiet machine and with BUSY competing busy-loop processes, in interleaved
rounds. moepp runs a parallel region per matrix product, so an OpenMP thread that loses its core makes
the others spin at the next barrier; this measures how much, and what the OpenMP settings change.

Settings: default (OMP_NUM_THREADS=THREADS), passive (+ OMP_WAIT_POLICY=PASSIVE: threads sleep at
once instead of spinning), spin1k (+ GOMP_SPINCOUNT=1000), one_thread (OMP_NUM_THREADS=1), adaptive
(--adaptive-threads: moepp's ThreadGovernor picks the thread count per decode step). Appends every JSON line to OUT with "setting", "busy" and "round",
and prints a table of decode tokens/s (median, min-max) per dtype, setting and load.

usage: scripts/bench_contention.py OUT.jsonl [--rounds 2] [--busy 1] [--threads 2] [--dtypes q4,bf16]
       [--moepp build/moepp]
       scripts/bench_contention.py OUT.jsonl --table
"""
import argparse
import json
import os
import statistics
import subprocess
import sys

SETTINGS = {  # name: (environment, extra bench infer arguments)
    "default": ({}, []),
    "passive": ({"OMP_WAIT_POLICY": "PASSIVE"}, []),
    "spin1k": ({"GOMP_SPINCOUNT": "1000"}, []),
    "one_thread": ({"OMP_NUM_THREADS": "1"}, []),
    "adaptive": ({}, ["--adaptive-threads"]),
}


def table(lines):
    res = {}
    for j in lines:
        if j.get("bench") == "infer":
            res.setdefault((j["dtype"], j["setting"], j["busy"]), []).append(j["decode_tokens_per_s"])
    print("| weights | setting | quiet decode tok/s | with busy processes |")
    print("|---|---|---|---|")
    for dt in sorted({k[0] for k in res}):
        for s in SETTINGS:
            cells = []
            for busy in sorted({k[2] for k in res}):
                v = res.get((dt, s, busy), [])
                cells.append(f"{statistics.median(v):.1f} ({min(v):.1f}-{max(v):.1f})" if v else "-")
            print(f"| {dt} | {s} | " + " | ".join(cells) + " |")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--busy", type=int, default=1, help="competing busy-loop processes in the loaded runs")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--dtypes", default="q4,bf16")
    ap.add_argument("--moepp", default="build/moepp")
    ap.add_argument("--table", action="store_true")
    a = ap.parse_args()
    if a.table:
        try:
            with open(a.out, encoding="utf-8") as f:
                table([json.loads(line) for line in f if line.strip()])
        except (OSError, json.JSONDecodeError) as e:
            sys.exit(f"bench_contention: {a.out}: {e}")
        return
    if a.rounds < 1 or a.busy < 1 or a.threads < 1:
        sys.exit("bench_contention: --rounds, --busy and --threads must be >= 1")
    lines = []
    with open(a.out, "a", encoding="utf-8") as out:
        for r in range(a.rounds):
            for busy in (0, a.busy):
                procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(busy)]
                try:
                    names = list(SETTINGS) if r % 2 == 0 else list(reversed(SETTINGS))
                    for s in names:
                        env = dict(os.environ)
                        env["OMP_NUM_THREADS"] = str(a.threads)
                        env.update(SETTINGS[s][0])
                        cmd = [a.moepp, "bench", "infer", "--dtypes", a.dtypes, "--variants", "moe", "--prompt", "16",
                               "--gen", "64", "--reps", "2"] + SETTINGS[s][1]
                        print(f"round {r + 1}/{a.rounds}, busy {busy}: {s}", file=sys.stderr, flush=True)
                        p = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, text=True)
                        if p.returncode != 0:
                            sys.exit(f"bench_contention: {' '.join(cmd)} exited with {p.returncode}")
                        for line in p.stdout.splitlines():
                            j = json.loads(line)
                            j.update({"setting": s, "busy": busy, "round": r})
                            out.write(json.dumps(j, sort_keys=True) + "\n")
                            lines.append(j)
                        out.flush()
                finally:
                    for p in procs:
                        p.kill()
                        p.wait()
    table(lines)


if __name__ == "__main__":
    main()
