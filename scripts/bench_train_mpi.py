#!/usr/bin/env python3
"""Whole-training-step weak scaling under mpirun: `moepp train` (the real trainer) at np 1 and at np N
(expert parallelism N, the same batch per rank), vanilla MoE and MoE++ of the same shape, interleaved
and repeated; prints one JSON object.

Per run it trains --steps steps from random weights on the committed slice corpus and reads the
trainer's own log: tokens/s of each step (whole batch, all ranks) after --warmup steps, the share of
step time spent communicating (expert exchanges + gradient sum), and the bytes each layer exchanged.
Weak-scaling efficiency = tokens/s at np N / (N x tokens/s at np 1); medians over the repeats, with
their range. On the project's 2-core machine np 2 means one core and one thread per rank, and MPI
goes through shared memory: the figures measure the mechanism and its overheads, not a cluster.
"""
import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VARIANTS = {"moe": "configs/exp-moe.json", "moepp_tau0.75": "configs/exp-moepp-tau0.75.json"}


def git_commit():
    p = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT)
    return p.stdout.strip()


def cpu_name():
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor()


def median_range(xs):
    return {"median": statistics.median(xs), "min": min(xs), "max": max(xs), "n": len(xs)}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--moepp", default=os.path.join(ROOT, "build", "moepp"))
    ap.add_argument("--np", type=int, default=2, help="ranks of the scaled run (expert parallelism = ranks)")
    ap.add_argument("--batch-per-rank", type=int, default=8, help="sequences of seq_len 256 per rank")
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--warmup", type=int, default=2, help="first steps left out of the medians")
    ap.add_argument("--reps", type=int, default=3)
    a = ap.parse_args()
    env = dict(os.environ, OMP_NUM_THREADS="1", OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    mpirun = ["mpirun", "--oversubscribe", "--bind-to", "none", "--mca", "mpi_yield_when_idle", "1", "-x",
              "OMP_NUM_THREADS"]
    result = {"bench": "train_mpi", "commit": git_commit(), "cpu": cpu_name(), "cores": os.cpu_count(),
              "threads_per_rank": 1, "load_average_at_start": os.getloadavg(), "np": a.np,
              "batch_per_rank": a.batch_per_rank, "steps": a.steps, "warmup": a.warmup, "reps": a.reps}
    with tempfile.TemporaryDirectory() as tmp:
        train = os.path.join(ROOT, "data", "slice", "train.txt")
        valid = os.path.join(ROOT, "data", "slice", "valid.txt")

        def config(variant, ranks):
            with open(os.path.join(ROOT, VARIANTS[variant])) as f:
                c = json.load(f)
            c.update(train_text=train, valid_text=valid, tokenizer_vocab=2048, batch_size=a.batch_per_rank * ranks,
                     steps=10_000, eval_every=10_000, ckpt_every=10_000, sample_tokens=0)
            path = os.path.join(tmp, f"{variant}-{ranks}.json")
            with open(path, "w") as f:
                json.dump(c, f)
            return path

        # The tokenizer and shards once; every run starts from a copy of them.
        prep = os.path.join(tmp, "prep")
        subprocess.run([a.moepp, "train", "--config", config("moe", 1), "--out", prep, "--quiet", "--stop-after", "1"],
                       check=True, env=env, capture_output=True)
        runs = {(v, n): [] for v in VARIANTS for n in (1, a.np)}
        for rep in range(a.reps):
            for v in VARIANTS:
                for n in (1, a.np):
                    out = os.path.join(tmp, f"run-{v}-{n}-{rep}")
                    os.makedirs(out)
                    shutil.copy(os.path.join(prep, "tokenizer.model"), out)
                    shutil.copytree(os.path.join(prep, "data"), os.path.join(out, "data"))
                    cmd = [a.moepp, "train", "--config", config(v, n), "--out", out, "--quiet",
                           "--stop-after", str(a.steps)]
                    if n > 1:
                        cmd = mpirun + ["-np", str(n)] + cmd + ["--ep-size", str(n)]
                    p = subprocess.run(cmd, env=env, capture_output=True, text=True)
                    if p.returncode != 0:
                        sys.exit(f"{' '.join(cmd)} failed: {p.stderr[-2000:]}")
                    with open(os.path.join(out, "log.jsonl")) as f:
                        recs = [json.loads(line) for line in f][a.warmup:]
                    runs[(v, n)].append(recs)
                    shutil.rmtree(out)
                    print(f"rep {rep} {v} np {n}: {statistics.median(r['tokens_per_s'] for r in recs):.0f} tok/s",
                          file=sys.stderr)
    out = {}
    for v in VARIANTS:
        one = [statistics.median(r["tokens_per_s"] for r in recs) for recs in runs[(v, 1)]]
        many = [statistics.median(r["tokens_per_s"] for r in recs) for recs in runs[(v, a.np)]]
        eff = [m / (a.np * o) for m, o in zip(many, one)]  # each rep's pair ran side by side
        share = [statistics.median(r["comm_share"] for r in recs) for recs in runs[(v, a.np)]]
        last = runs[(v, a.np)][-1][-1]
        out[v] = {"tokens_per_s_np1": median_range(one), f"tokens_per_s_np{a.np}": median_range(many),
                  "weak_scaling_efficiency": median_range(eff), "comm_share": median_range(share),
                  "ffn_experts_per_token": last["ffn_experts_per_token"],
                  "fwd_bytes_sent_per_layer_last_step": [x["fwd_bytes_sent"] for x in last["expert_exchange"]]}
    for v in VARIANTS:
        out[v]["bytes_ratio_to_moe"] = (sum(out[v]["fwd_bytes_sent_per_layer_last_step"]) /
                                        sum(out["moe"]["fwd_bytes_sent_per_layer_last_step"]))
    result["variants"] = out
    result["load_average_at_end"] = os.getloadavg()
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
