#!/usr/bin/env python3
"""`mpirun -np N moepp train --ep-size E` against one process (issue 11), on a tiny model with capacity:

1. 20 steps at np 2 (EP 2), np 4 (EP 2 x DP 2), np 4 (EP 4) and np 2 (DP 2) against one process: the
   loss and gradient norm of every step within 1e-5 relative, the validation loss too (np 4 with EP 4
   holds one FFN expert per rank);
2. a repeat at the same np is bit-identical (every logged value but the timings);
3. a checkpoint saved at np 4 (EP 4, four shards and the index) resumes at np 2 and in one process and
   at np 4 again, each as the uninterrupted run (bit-identical at the same np); `moepp eval ppl` scores
   it the same in one process and at np 2 (expert-parallel inference);
4. the per-layer exchange counters in the log: bytes = rows x D x 4, rows sent = rows received;
5. bad setups end every rank with a clear message and a non-zero exit: --ep-size not dividing the
   ranks, --ep-size not dividing the FFN experts (4 of the 8 experts are FFN), a config that differs
   between ranks;
6. a rank killed mid-step (SIGKILL at its 7th step) ends the job non-zero in bounded time, and the last
   checkpoint resumes to the end.
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "python"))
import helpers as H  # noqa: E402

TIMING_KEYS = {"tokens_per_s", "comm_share", "grad_sync_s"}


def main():
    args, exe = H.parse_test_args(case_filter=False, verbose=False,
                                  add_options=lambda ap: ap.add_argument("--mpirun", required=True))
    tally = H.Tally()
    env = dict(os.environ, OMP_NUM_THREADS="1", OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    mpirun = [args.mpirun, "--oversubscribe", "--bind-to", "none", "--mca", "mpi_yield_when_idle", "1",
              "-x", "OMP_NUM_THREADS"] + (["-x", "ASAN_OPTIONS"] if "ASAN_OPTIONS" in env else [])

    def run(np, *a, check=True, extra_env=None, timeout=300):
        """moepp in one process (np 0) or under mpirun -np np; extra_env reaches every rank."""
        launch = [] if np == 0 else mpirun + sum((["-x", k] for k in (extra_env or {})), []) + ["-np", str(np)]
        cmd = launch + [exe, *a]
        p = subprocess.run(cmd, capture_output=True, text=True, env=dict(env, **(extra_env or {})), timeout=timeout)
        if check and p.returncode != 0:
            raise AssertionError(f"{' '.join(cmd)} failed ({p.returncode}): {p.stderr[-2000:]}")
        return p

    def log(d):
        with open(os.path.join(d, "log.jsonl")) as f:
            return [json.loads(line) for line in f]

    def close(a, b, what, tol=1e-5):
        assert len(a) == len(b), f"{what}: {len(a)} vs {len(b)} records"
        for x, y in zip(a, b):
            for k in ("loss", "grad_norm", "aux_loss", "val_loss"):
                if k in x or k in y:
                    err = abs(x[k] - y[k]) / max(abs(y[k]), 1e-12)
                    assert err <= tol, f"{what}: step {x['step']} {k} {x[k]} vs {y[k]} (relative {err:.2e})"

    def identical(a, b, what):
        strip = [{k: v for k, v in r.items() if k not in TIMING_KEYS and k != "expert_exchange"} for r in a]
        strip_b = [{k: v for k, v in r.items() if k not in TIMING_KEYS and k != "expert_exchange"} for r in b]
        assert strip == strip_b, f"{what}: first difference {next((p, q) for p, q in zip(strip, strip_b) if p != q)}"

    with tempfile.TemporaryDirectory() as tmp:
        train, valid = H.write_slice_corpus(tmp, 120_000)
        cfg = H.write_tiny_train_config(tmp, train, valid, layers=2, tokenizer_vocab=512, steps=20, eval_every=10,
                                        ckpt_every=5, sample_tokens=5, model_extra={"moe_capacity_factor": 1.1},
                                        name="cfg.json")
        d = lambda name: os.path.join(tmp, name)  # noqa: E731
        t0 = time.time()
        run(0, "train", "--config", cfg, "--out", d("np1"), "--quiet")
        ref = log(d("np1"))
        setups = {"np2_ep2": (2, 2), "np4_ep2": (4, 2), "np4_ep4": (4, 4), "np2_dp2": (2, 1)}
        for name, (n, e) in setups.items():
            run(n, "train", "--config", cfg, "--out", d(name), "--ep-size", str(e), "--quiet")

        def twenty_steps_match_one_process():
            assert len(ref) == 20 and "val_loss" in ref[-1], ref[-1]
            for name in setups:
                close(log(d(name)), ref, name)

        def repeat_is_bit_identical():
            run(2, "train", "--config", cfg, "--out", d("np2_ep2_again"), "--ep-size", "2", "--quiet")
            identical(log(d("np2_ep2_again")), log(d("np2_ep2")), "np 2 repeat")

        def exchange_counters_in_the_log():
            for r in log(d("np4_ep2")):
                x = r["expert_exchange"]
                assert r["ranks"] == 4 and r["ep_size"] == 2 and len(x) == 2, r
                for layer in x:
                    assert layer["fwd_rows_sent"] == layer["fwd_rows_received"] > 0, layer
                    assert layer["bwd_rows_sent"] == layer["bwd_rows_received"] == layer["fwd_rows_sent"], layer
                    assert layer["fwd_bytes_sent"] == layer["fwd_rows_sent"] * 32 * 4, layer  # D = 32
                assert 0 < r["comm_share"] < 1, r
            assert "expert_exchange" not in log(d("np2_dp2"))[0]

        def checkpoint_of_np4_resumes_anywhere():
            run(4, "train", "--config", cfg, "--out", d("stop4"), "--ep-size", "4", "--quiet", "--stop-after", "10")
            ck = os.path.join(d("stop4"), "checkpoint-10")
            files = sorted(os.listdir(ck))
            for i in range(1, 5):
                assert f"model-0000{i}-of-00004.safetensors" in files and f"optimizer-0000{i}-of-00004.safetensors" in files
            assert "model.safetensors.index.json" in files and "optimizer.safetensors.index.json" in files, files
            for name, (n, e) in {"to_np2": (2, 2), "to_np1": (0, 1), "to_np4": (4, 4)}.items():
                shutil.copytree(d("stop4"), d(name))
                run(n, "train", "--config", cfg, "--out", d(name), "--quiet", "--resume",
                    *(["--ep-size", str(e)] if n else []))
                close(log(d(name)), ref, name)
            identical(log(d("to_np4")), log(d("np4_ep4")), "np 4 resume")
            # It loads whole in one process and split over 2 ranks (expert-parallel inference), with the
            # same scores to the last digit.
            ev = ["eval", "ppl", "--model", d("stop4"), "--text", valid, "--window", "64", "--quiet"]
            one, two = run(0, *ev), run(2, *ev, "--ep-size", "2")
            scores = [{k: v for k, v in json.loads(p.stdout).items() if "second" not in k and "per_s" not in k}
                      for p in (one, two)]
            assert scores[0] == scores[1] and scores[0]["tokens"] > 0, scores

        def bad_setups_fail_on_every_rank():
            cases = [(2, ["--ep-size", "3"], "does not divide the 2 ranks"),
                     (3, ["--ep-size", "3"], "does not divide layer 0's 4 FFN experts")]
            for n, extra, msg in cases:
                p = run(n, "train", "--config", cfg, "--out", d("bad"), "--quiet", *extra, check=False, timeout=60)
                assert p.returncode != 0, p.stderr
                for r in range(n):
                    assert f"(rank {r} of {n})" in p.stderr and msg in p.stderr, p.stderr[-1500:]
            other = os.path.join(tmp, "other.json")
            c = json.load(open(cfg))
            c["lr"] = 0.004
            json.dump(c, open(other, "w"))
            cmd = mpirun + ["-np", "1", exe, "train", "--config", cfg, "--out", d("bad2"), "--quiet", ":",
                            "-np", "1", exe, "train", "--config", other, "--out", d("bad2"), "--quiet"]
            p = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=60)
            assert p.returncode != 0, p.stderr
            for r in range(2):
                assert f"(rank {r} of 2): the training config or command line differs between ranks" in p.stderr, \
                    p.stderr[-1500:]

        def killed_rank_ends_the_job_and_resumes():
            t = time.time()
            p = run(2, "train", "--config", cfg, "--out", d("killed"), "--ep-size", "2", "--quiet", check=False,
                    extra_env={"MOEPP_FAULT_POINT": "train:step:rank1@7"}, timeout=60)
            took = time.time() - t
            assert p.returncode != 0, p.stderr
            assert took < 30, f"the job took {took:.1f} s to end"
            with open(os.path.join(d("killed"), "latest")) as f:
                assert f.read().strip() == "checkpoint-5"
            run(2, "train", "--config", cfg, "--out", d("killed"), "--ep-size", "2", "--quiet", "--resume")
            identical(log(d("killed")), log(d("np2_ep2")), "resumed after the kill")

        tally.run_each(twenty_steps_match_one_process, repeat_is_bit_identical, exchange_counters_in_the_log,
                       checkpoint_of_np4_resumes_anywhere, bad_setups_fail_on_every_rank,
                       killed_rank_ends_the_job_and_resumes)
        print(f"({time.time() - t0:.1f} s)")
    sys.exit(tally.finish())


if __name__ == "__main__":
    main()
