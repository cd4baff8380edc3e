#!/usr/bin/python3
"""End-to-end tests of `moepp analyze` and the plot scripts (run by CTest with --moepp PATH):

1. a tiny run trained for a few steps is analysed: analysis.json has every documented field with
   consistent values, and the PNG plots exist and are PNGs (when matplotlib is installed);
2. scripts/plot_losses.py draws the run's log.jsonl, also with --group-seeds over copies of the run as seeds;
3. bad inputs (missing model dir, missing text file, empty text, bad --seq-len) fail with a clear
   message and a non-zero exit.
Prints `N passed, M failed`.
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, HERE)
import helpers as H  # noqa: E402

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def tiny_config(tmp, steps=6):
    # A small piece of the committed slice: enough for a 320-piece tokenizer and a few steps.
    train, valid = H.write_slice_corpus(tmp, 60_000)
    path = H.write_tiny_train_config(tmp, train, valid, layers=3, tokenizer_vocab=320, steps=steps, eval_every=3,
                                     ckpt_every=steps, sample_tokens=0)
    return path, valid


def run(cmd, check=True):
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "2"))
    p = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    if check and p.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({p.returncode}): {p.stderr[-2000:]}{p.stdout[-1000:]}")
    return p


def have_matplotlib():
    return subprocess.run(["/usr/bin/python3", "-c", "import matplotlib"], capture_output=True).returncode == 0


def is_png(path):
    with open(path, "rb") as f:
        return f.read(8) == PNG_MAGIC and os.path.getsize(path) > 1000


def main():
    _, exe = H.parse_test_args(case_filter=False, verbose=False)
    tally = H.Tally()

    plots = have_matplotlib()
    if not plots:
        print("note: /usr/bin/python3 has no matplotlib; the PNG checks are skipped")

    with tempfile.TemporaryDirectory() as tmp:
        cfg, valid = tiny_config(tmp)
        rund = os.path.join(tmp, "run")
        run([exe, "train", "--config", cfg, "--out", rund, "--quiet"])
        out = os.path.join(tmp, "analysis")

        def analyze_report():
            p = run([exe, "analyze", "--model", rund, "--text", valid, "--out", out, "--max-tokens", "1500",
                     "--seq-len", "48", "--top", "12", "--min-count", "3"])
            assert "wrote" in p.stdout, p.stdout
            j = json.load(open(os.path.join(out, "analysis.json"), encoding="utf-8"))
            assert j["format"] == "moepp-routing-analysis" and j["version"] == 1
            m = j["model"]
            assert m["n_layers"] == 3 and m["n_experts"] == 8 and m["top_k"] == 2 and m["router"] == "moepp", m
            assert m["n_ffn"] == 4 and m["gating_residual"] is True, m
            assert 0 < j["tokens"] <= 1500 and j["seq_len"] == 48, (j["tokens"], j["seq_len"])
            assert j["windows"] == -(-j["tokens"] // 48)
            assert j["loss"] > 0 and j["loss_no_residual"] > 0
            for key in ("ffn_experts_per_token", "ffn_experts_per_token_no_residual"):
                f = j[key]
                assert len(f["per_layer"]) == 3 and all(0 <= v <= 2 for v in f["per_layer"]), f
                assert abs(f["mean"] - sum(f["per_layer"]) / 3) < 1e-9, f
            t = j["expert_type_fraction"]
            for l in range(3):
                s = t["ffn"][l] + t["constant"][l] + t["copy"][l] + t["zero"][l]
                assert abs(s - 1) < 1e-9, s
                assert abs(sum(t["per_expert"][l]) - 1) < 1e-9
                # FFN share of the K slots = FFN experts per token / K
                assert abs(t["ffn"][l] - j["ffn_experts_per_token"]["per_layer"][l] / 2) < 1e-9
            toks = j["tokens_by_frequency"]
            assert len(toks) == 12 and j["unique_tokens"] >= 12
            counts = [x["count"] for x in toks]
            assert counts == sorted(counts, reverse=True), counts
            for x in toks:
                assert {"id", "piece", "text", "count", "mean_ffn_experts", "per_layer"} <= set(x), x
                assert 0 <= x["mean_ffn_experts"] <= 2 and len(x["per_layer"]) == 3
            ext = j["tokens_by_ffn_experts"]
            assert ext["min_count"] == 3 and ext["most"] and ext["fewest"]
            assert ext["most"][0]["mean_ffn_experts"] >= ext["fewest"][0]["mean_ffn_experts"]
            h = j["score_histograms"]
            assert h["bins"] == 50 and len(h["edges"]) == 51
            for side in ("with_residual", "without_residual"):
                for rank in ("top1", "top2"):
                    d = h[side][rank]
                    assert sum(d["overall"]) == j["tokens"] * 3, (side, rank)
                    assert len(d["per_layer"]) == 3 and all(sum(r) == j["tokens"] for r in d["per_layer"])
                    assert 0 < d["mean"] <= 1
            assert h["with_residual"]["top1"]["mean"] >= h["with_residual"]["top2"]["mean"]
            # Layer 0 has no gating residual: identical histograms there.
            assert h["with_residual"]["top1"]["per_layer"][0] == h["without_residual"]["top1"]["per_layer"][0]
            if plots:
                for name in ("ffn_experts_by_layer.png", "ffn_experts_by_token.png", "score_histograms.png",
                             "expert_types.png"):
                    path = os.path.join(out, name)
                    assert os.path.exists(path) and is_png(path), path

        def plot_losses():
            if not plots:
                return
            png = os.path.join(tmp, "losses.png")
            run(["/usr/bin/python3", os.path.join(ROOT, "scripts", "plot_losses.py"), rund, rund, "--labels",
                 "a,b", "--x", "tokens", "--out", png])
            assert is_png(png), png
            p = run(["/usr/bin/python3", os.path.join(ROOT, "scripts", "plot_losses.py"), os.path.join(tmp, "nope"),
                     "--out", png], check=False)
            assert p.returncode != 0 and "log.jsonl" in p.stderr, p.stderr

            # --group-seeds: two copies of the run as seeds tiny-s1, tiny-s2 of one preset (the second's losses
            # shifted, so that the seeds' range is not empty) next to the run itself, a one-seed preset.
            with open(os.path.join(rund, "log.jsonl"), encoding="utf-8") as f:
                rows = [json.loads(line) for line in f if line.strip()]

            def seed_dir(name, records, shift=0.0):
                d = os.path.join(tmp, "seeds", name)
                os.makedirs(d)
                shutil.copy(os.path.join(rund, "train_config.json"), d)
                with open(os.path.join(d, "log.jsonl"), "w", encoding="utf-8") as f:
                    for r in records:
                        r = dict(r, loss=r["loss"] + shift)
                        if r.get("val_loss") is not None:
                            r["val_loss"] += shift
                        f.write(json.dumps(r) + "\n")
                return d

            seeds = [seed_dir("tiny-s1", rows), seed_dir("tiny-s2", rows, 0.05)]
            png = os.path.join(tmp, "losses_seeds.png")
            p = run(["/usr/bin/python3", os.path.join(ROOT, "scripts", "plot_losses.py"), *seeds, rund,
                     "--group-seeds", "--labels", "tiny,single", "--x", "tokens", "--out", png])
            assert is_png(png), png
            assert "tiny: 2 seeds;" in p.stdout and "run: 1 seed;" in p.stdout, p.stdout
            # Seeds without a step in common are an error.
            gap = [seed_dir("gap-s1", rows[:3]), seed_dir("gap-s2", rows[3:])]
            p = run(["/usr/bin/python3", os.path.join(ROOT, "scripts", "plot_losses.py"), *gap, "--group-seeds",
                     "--out", png], check=False)
            assert p.returncode != 0 and "no training step in common" in p.stderr, p.stderr

        def bad_inputs():
            empty = os.path.join(tmp, "empty.txt")
            with open(empty, "w") as f:
                f.write("\n  \n\n")
            bad = {
                "missing model": (["--model", os.path.join(tmp, "nope"), "--text", valid], "nope"),
                "missing text": (["--model", rund, "--text", os.path.join(tmp, "missing.txt")], "missing.txt"),
                "empty text": (["--model", rund, "--text", empty], "empty.txt"),
                "seq too long": (["--model", rund, "--text", valid, "--seq-len", "65"], "max_position_embeddings"),
                "not a model": (["--model", tmp, "--text", valid], "config.json"),
            }
            for name, (args, needle) in bad.items():
                p = run([exe, "analyze", *args, "--out", os.path.join(tmp, "bad"), "--no-plots"], check=False)
                assert p.returncode != 0 and needle in p.stderr, (name, p.returncode, p.stderr)

        tally.run_each(analyze_report, plot_losses, bad_inputs)

    return tally.finish()


if __name__ == "__main__":
    sys.exit(main())
