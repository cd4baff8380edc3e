#!/usr/bin/python3
"""Crash-safe writes, proven (run by CTest with --moepp PATH):

1. The trainer killed (SIGKILL, via the MOEPP_FAULT_POINT crash points of src/core/fault_point.h) at
   every step of its second checkpoint write (each file's atomic write before its rename, after the
   weights, after the optimizer state, after the trainer state, after the directory rename, after the
   `latest` pointer): `latest` names a complete checkpoint that loads, no file under a final name is
   partial, and --resume gives the losses of an uninterrupted run bit for bit.
2. A full disk (a file-size limit, RLIMIT_FSIZE, below the weights' size) during a checkpoint: a clear
   error and exit 1, the previous checkpoint kept and named by `latest`, no temporary file or directory
   left, and the run resumes bit-exactly once there is room.
3. `moepp convert` killed while writing, or out of room: the output directory does not appear (it is
   renamed into place whole), a later convert succeeds, and a non-empty --out is refused.
Prints `N passed, M failed`.
"""
import glob
import json
import os
import resource
import signal
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import helpers as H  # noqa: E402
import safetensors_np as st  # noqa: E402

# The second checkpoint (step 4) of a run with checkpoints every 2 steps.
KILL_POINTS = ["atomic_write:model.safetensors@2", "checkpoint:model@2", "atomic_write:optimizer.safetensors@2",
               "checkpoint:optimizer@2", "atomic_write:trainer_state.json@2", "checkpoint:state@2",
               "checkpoint:renamed@2", "atomic_write:latest@2", "checkpoint:latest@2"]


def run(exe, *args, env_extra=None, fsize=None, check=True):
    env = dict(os.environ, OMP_NUM_THREADS="2")
    env.pop("MOEPP_FAULT_POINT", None)
    env.update(env_extra or {})

    def limit():
        if fsize is not None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))

    p = subprocess.run([exe, *args], capture_output=True, text=True, env=env, timeout=600, preexec_fn=limit)
    if check and p.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed ({p.returncode}): {p.stderr[-2000:]}")
    return p


def losses(run_dir):
    with open(os.path.join(run_dir, "log.jsonl")) as f:
        return [(r["step"], r["loss"], r.get("val_loss")) for r in map(json.loads, f) if "loss" in r]


def latest_of(run_dir):
    with open(os.path.join(run_dir, "latest")) as f:
        return f.read().strip()


def assert_complete(exe, run_dir, tmp):
    """Every file under a final name in the run's checkpoints is whole, no temporary is left, and the
    checkpoint `latest` names loads."""
    for d in glob.glob(os.path.join(run_dir, "checkpoint-*")):
        for f in glob.glob(os.path.join(d, "*.safetensors")):
            hdr = st.header_of(f)
            end = max((v["data_offsets"][1] for k, v in hdr.items() if k != "__metadata__"), default=0)
            with open(f, "rb") as fh:
                n = int.from_bytes(fh.read(8), "little")
            assert os.path.getsize(f) == 8 + n + end, f"{f}: {os.path.getsize(f)} bytes, header says {8 + n + end}"
        for f in glob.glob(os.path.join(d, "*.json")):
            json.load(open(f))
    ck = latest_of(run_dir)
    assert os.path.isdir(os.path.join(run_dir, ck)), ck
    run(exe, "dump", "--model", os.path.join(run_dir, ck), "--tokens", "1,5,9", "--out", os.path.join(tmp, "dump.safetensors"))


def leftovers(run_dir):
    return glob.glob(os.path.join(run_dir, ".checkpoint-tmp-*")) + glob.glob(os.path.join(run_dir, "**", "*.tmp.*"),
                                                                              recursive=True)


def main():
    _, exe = H.parse_test_args(case_filter=False, verbose=False)
    tally = H.Tally()
    with tempfile.TemporaryDirectory() as tmp:
        train, valid = H.write_slice_corpus(tmp, 120_000)
        cfg = H.write_tiny_train_config(tmp, train, valid, layers=2, tokenizer_vocab=512, steps=8, eval_every=4,
                                        ckpt_every=2, sample_tokens=0)
        ref_dir = os.path.join(tmp, "ref")
        run(exe, "train", "--config", cfg, "--out", ref_dir, "--quiet")
        ref = losses(ref_dir)
        assert len(ref) == 8, ref

        def killed_at(point):
            def case():
                d = os.path.join(tmp, "kill_" + point.replace(":", "_").replace("@", "_"))
                p = run(exe, "train", "--config", cfg, "--out", d, "--quiet",
                        env_extra={"MOEPP_FAULT_POINT": point}, check=False)
                assert p.returncode == -signal.SIGKILL, f"not killed at {point}: {p.returncode} {p.stderr[-500:]}"
                want = "checkpoint-4" if point.startswith("checkpoint:latest") else "checkpoint-2"
                assert latest_of(d) == want, (latest_of(d), want)
                assert_complete(exe, d, tmp)
                run(exe, "train", "--config", cfg, "--out", d, "--quiet", "--resume")
                assert losses(d) == ref, f"\nresumed {losses(d)}\nfull    {ref}"
                assert not leftovers(d), leftovers(d)
            case.__name__ = "killed_at_" + point
            return case

        def full_disk_during_checkpoint():
            d = os.path.join(tmp, "full_disk")
            run(exe, "train", "--config", cfg, "--out", d, "--quiet", "--stop-after", "2")
            weights = os.path.getsize(os.path.join(d, "checkpoint-2", "model.safetensors"))
            p = run(exe, "train", "--config", cfg, "--out", d, "--quiet", "--resume", fsize=weights // 2, check=False)
            assert p.returncode == 1, (p.returncode, p.stderr[-800:])
            assert "checkpoint of step 4 not written" in p.stderr and "File too large" in p.stderr, p.stderr[-800:]
            assert latest_of(d) == "checkpoint-2", latest_of(d)
            assert not leftovers(d), leftovers(d)
            assert_complete(exe, d, tmp)
            run(exe, "train", "--config", cfg, "--out", d, "--quiet", "--resume")
            assert losses(d) == ref, f"\nresumed {losses(d)}\nfull    {ref}"

        src = os.path.join(ref_dir, latest_of(ref_dir))

        def convert_killed_then_redone():
            out = os.path.join(tmp, "conv_killed")
            p = run(exe, "convert", "--model", src, "--out", out, env_extra={"MOEPP_FAULT_POINT": "atomic_write:model.safetensors"},
                    check=False)
            assert p.returncode == -signal.SIGKILL, (p.returncode, p.stderr[-500:])
            assert not os.path.exists(out), "a killed convert left its output directory"
            p = run(exe, "convert", "--model", src, "--out", out, env_extra={"MOEPP_FAULT_POINT": "convert:weights"},
                    check=False)
            assert p.returncode == -signal.SIGKILL and not os.path.exists(out), p.returncode
            run(exe, "convert", "--model", src, "--out", out)
            assert sorted(os.listdir(out)) == ["config.json", "model.safetensors", "tokenizer.model"], os.listdir(out)
            assert not glob.glob(out + ".partial-*"), glob.glob(out + ".partial-*")
            run(exe, "dump", "--model", out, "--tokens", "1,5,9", "--out", os.path.join(tmp, "dump2.safetensors"))

        def convert_out_of_room():
            out = os.path.join(tmp, "conv_full")
            size = os.path.getsize(os.path.join(src, "model.safetensors"))
            p = run(exe, "convert", "--model", src, "--out", out, fsize=size // 3, check=False)
            assert p.returncode == 1 and "File too large" in p.stderr and "nothing was written" in p.stderr, \
                (p.returncode, p.stderr[-500:])
            assert not os.path.exists(out) and not glob.glob(out + ".partial-*")

        def convert_refuses_a_non_empty_out():
            out = os.path.join(tmp, "conv_busy")
            os.makedirs(out)
            open(os.path.join(out, "keep.txt"), "w").write("mine")
            p = run(exe, "convert", "--model", src, "--out", out, check=False)
            assert p.returncode == 1 and "not an empty directory" in p.stderr, p.stderr[-500:]
            assert open(os.path.join(out, "keep.txt")).read() == "mine"

        tally.run_each(*[killed_at(p) for p in KILL_POINTS], full_disk_during_checkpoint, convert_killed_then_redone,
                       convert_out_of_room, convert_refuses_a_non_empty_out)
    return tally.finish()


if __name__ == "__main__":
    sys.exit(main())
