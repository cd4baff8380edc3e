#!/usr/bin/python3
"""End-to-end tests of `moepp train` on a tiny model and corpus (run by CTest with --moepp PATH):

1. the training loss goes down;
2. stopping after step 6 and resuming gives exactly the losses of an uninterrupted run (bitwise: the
   batches are a function of the step, and the kernels are deterministic for a thread count);
3. the same after the process was killed with SIGKILL mid-run (checkpoints are atomic; the resumed
   run truncates the log to its checkpoint);
4. the checkpoint is a Hugging Face style directory that `moepp dump` and `moepp generate` load;
5. bad training configs give a clear error and a non-zero exit;
6. --resume under a training config whose model differs from the checkpoint's is refused, naming the keys;
7. ReMoE (relu router): lambda is multiplied or divided by 1.2 after every step towards sparsity 1 - K/E,
   and a resumed run continues it exactly (same losses, same lambdas).
Prints `N passed, M failed`.
"""
import json
import os
import signal
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import helpers as H  # noqa: E402


def tiny_config(tmp, steps=12, ckpt_every=4, model_extra=None, name="train.json"):
    # ~120 KB of the committed slice is enough for a 512-piece tokenizer and a few steps.
    train, valid = H.write_slice_corpus(tmp, 120_000)
    return H.write_tiny_train_config(tmp, train, valid, layers=2, tokenizer_vocab=512, steps=steps, eval_every=6,
                                     ckpt_every=ckpt_every, sample_tokens=5, model_extra=model_extra, name=name)


def losses(run):
    with open(os.path.join(run, "log.jsonl")) as f:
        return [(r["step"], r["loss"], r.get("val_loss")) for r in map(json.loads, f) if "loss" in r]


def run(moepp, *args, check=True):
    env = dict(os.environ, OMP_NUM_THREADS="2")
    p = subprocess.run([moepp, *args], capture_output=True, text=True, env=env, timeout=600)
    if check and p.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed ({p.returncode}): {p.stderr[-2000:]}")
    return p


def main():
    _, exe = H.parse_test_args(case_filter=False, verbose=False)
    tally = H.Tally()

    with tempfile.TemporaryDirectory() as tmp:
        cfg = tiny_config(tmp)
        full = os.path.join(tmp, "full")
        run(exe, "train", "--config", cfg, "--out", full, "--quiet")
        ref = losses(full)

        def loss_goes_down():
            assert len(ref) == 12, ref
            first = sum(l for _, l, _ in ref[:3]) / 3
            last = sum(l for _, l, _ in ref[-3:]) / 3
            assert last < first - 0.3, (first, last)

        def resume_identical():
            part = os.path.join(tmp, "part")
            run(exe, "train", "--config", cfg, "--out", part, "--quiet", "--stop-after", "6")
            assert len(losses(part)) == 6
            run(exe, "train", "--config", cfg, "--out", part, "--quiet", "--resume")
            got = losses(part)
            assert got == ref, f"\nresumed {got}\nfull    {ref}"

        def resume_after_sigkill():
            # 300 steps, so that the kill lands mid-run however fast the machine (12 steps of this
            # tiny model can finish between two polls); its own uninterrupted run is the reference.
            killed = os.path.join(tmp, "killed")
            cfg2 = tiny_config(os.path.join(tmp), steps=300, ckpt_every=2, name="kill.json")
            full2 = os.path.join(tmp, "full300")
            run(exe, "train", "--config", cfg2, "--out", full2, "--quiet")
            ref2 = losses(full2)
            env = dict(os.environ, OMP_NUM_THREADS="2")
            p = subprocess.Popen([exe, "train", "--config", cfg2, "--out", killed, "--quiet"], env=env,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            deadline = time.time() + 300
            log = os.path.join(killed, "log.jsonl")
            while time.time() < deadline:
                if os.path.exists(log) and len(open(log).read().splitlines()) >= 7:
                    break
                if p.poll() is not None:
                    break
                time.sleep(0.01)
            if p.poll() is None:
                p.send_signal(signal.SIGKILL)
            p.wait()
            assert p.returncode == -signal.SIGKILL, f"the run ended before it could be killed ({p.returncode})"
            run(exe, "train", "--config", cfg2, "--out", killed, "--quiet", "--resume")
            got = losses(killed)
            assert len(ref2) == 300 and got == ref2, f"\nresumed {got[:8]}...\nfull    {ref2[:8]}..."

        def checkpoint_loads():
            latest = open(os.path.join(full, "latest")).read().strip()
            ck = os.path.join(full, latest)
            for f in ("config.json", "model.safetensors", "tokenizer.model", "optimizer.safetensors", "trainer_state.json"):
                assert os.path.exists(os.path.join(ck, f)), f
            cfgj = json.load(open(os.path.join(ck, "config.json")))
            assert cfgj["model_type"] == "MoE++" and cfgj["vocab_size"] == 512, cfgj
            out = os.path.join(tmp, "dump.safetensors")
            run(exe, "dump", "--model", ck, "--tokens", "1,5,9,12", "--out", out)
            assert os.path.getsize(out) > 0
            g = run(exe, "generate", "--model", full, "--prompt", "The", "--max-tokens", "5")
            assert g.stdout.strip() != ""

        def prints_the_sample():
            # Without --quiet a completed run ends with the validation loss and a sample drawn from its
            # final checkpoint (the train command loads it back with the decoder).
            d = os.path.join(tmp, "sample")
            p = run(exe, "train", "--config", cfg, "--out", d, "--steps", "3")
            lines = p.stdout.strip().splitlines()
            assert len(lines) >= 2 and lines[-2].startswith("val_loss ") and "bits/byte" in lines[-2], p.stdout
            assert lines[-1].startswith("sample: The"), p.stdout

        def bad_configs():
            bad = {
                "unknown field": ({"model": {}, "train_text": "x", "stepz": 3}, "stepz"),
                "missing model": ({"train_text": "x"}, "model"),
                "wrong type": ({"model": {}, "train_text": "x", "batch_size": "8"}, "batch_size"),
                "zero steps": ({"model": {}, "train_text": "x", "steps": 0}, "steps"),
            }
            for name, (cfgj, needle) in bad.items():
                path = os.path.join(tmp, "bad.json")
                with open(path, "w") as f:
                    json.dump(cfgj, f)
                p = run(exe, "train", "--config", path, "--out", os.path.join(tmp, "bad"), check=False)
                assert p.returncode != 0 and needle in p.stderr, (name, p.returncode, p.stderr)
            path = os.path.join(tmp, "broken.json")
            with open(path, "w") as f:
                f.write("{not json")
            p = run(exe, "train", "--config", path, "--out", os.path.join(tmp, "bad"), check=False)
            assert p.returncode != 0 and "broken.json" in p.stderr, p.stderr

        def resume_refuses_a_changed_model():
            # A run stopped under one router setting, resumed under the training config with the key
            # removed (the released default differs): refused, naming the key, before any step.
            base = tiny_config(tmp, steps=4, ckpt_every=2, name="explicit.json",
                               model_extra={"moe_use_logits_norm": True, "moe_2layer_gate": False})
            changed_run = os.path.join(tmp, "changed")
            run(exe, "train", "--config", base, "--out", changed_run, "--quiet", "--stop-after", "2")
            cj = json.load(open(base))
            del cj["model"]["moe_use_logits_norm"]
            changed = os.path.join(tmp, "changed.json")
            json.dump(cj, open(changed, "w"))
            p = run(exe, "train", "--config", changed, "--out", changed_run, "--quiet", "--resume", check=False)
            assert p.returncode != 0, p.stderr
            assert "moe_use_logits_norm (true vs false)" in p.stderr and "config.json" in p.stderr, p.stderr
            assert "moe_2layer_gate" not in p.stderr, p.stderr
            assert len(losses(changed_run)) == 2, losses(changed_run)
            # The unchanged config still resumes.
            run(exe, "train", "--config", base, "--out", changed_run, "--quiet", "--resume")
            assert len(losses(changed_run)) == 4

        def remoe_adaptive_lambda():
            rc = tiny_config(tmp, steps=8, ckpt_every=4, name="remoe.json",
                             model_extra={"moe_router": "relu", "moe_relu_l1_coef": 1e-3,
                                          "moe_relu_target_experts": 1.5})
            full_r = os.path.join(tmp, "remoe_full")
            run(exe, "train", "--config", rc, "--out", full_r, "--quiet")
            with open(os.path.join(full_r, "log.jsonl")) as f:
                recs = [json.loads(l) for l in f if l.strip()]
            assert len(recs) == 8 and all("relu_l1_coef" in r and "relu_sparsity" in r for r in recs), recs[:1]
            assert abs(recs[0]["relu_l1_coef"] - 1e-3) < 1e-9, recs[0]
            target = 1 - 1.5 / 8  # moe_relu_target_experts, not K = 2
            for prev, nxt in zip(recs, recs[1:]):
                want = prev["relu_l1_coef"] * (1.2 if prev["relu_sparsity"] < target else 1 / 1.2)
                assert abs(nxt["relu_l1_coef"] - want) <= 1e-6 * want, (prev, nxt)
            ck = os.path.join(full_r, open(os.path.join(full_r, "latest")).read().strip())
            st = json.load(open(os.path.join(ck, "trainer_state.json")))
            last = recs[-1]
            want = last["relu_l1_coef"] * (1.2 if last["relu_sparsity"] < target else 1 / 1.2)
            assert abs(st["relu_l1_coef"] - want) <= 1e-6 * want, (st, last)
            part_r = os.path.join(tmp, "remoe_part")
            run(exe, "train", "--config", rc, "--out", part_r, "--quiet", "--stop-after", "4")
            run(exe, "train", "--config", rc, "--out", part_r, "--quiet", "--resume")
            with open(os.path.join(part_r, "log.jsonl")) as f:
                got = [json.loads(l) for l in f if l.strip()]
            key = lambda r: (r["step"], r["loss"], r["aux_loss"], r["relu_l1_coef"])
            assert list(map(key, got)) == list(map(key, recs)), f"\nresumed {got}\nfull    {recs}"
            # A checkpoint without lambda is refused with a message naming the field.
            sp = os.path.join(part_r, open(os.path.join(part_r, "latest")).read().strip(), "trainer_state.json")
            st = json.load(open(sp))
            del st["relu_l1_coef"]
            json.dump(st, open(sp, "w"))
            p = run(exe, "train", "--config", rc, "--out", part_r, "--quiet", "--resume", check=False)
            assert p.returncode != 0 and "relu_l1_coef" in p.stderr, p.stderr

        tally.run_each(loss_goes_down, resume_identical, resume_after_sigkill, checkpoint_loads, prints_the_sample,
                       bad_configs,
                       resume_refuses_a_changed_model, remoe_adaptive_lambda)

    return tally.finish()


if __name__ == "__main__":
    sys.exit(main())
