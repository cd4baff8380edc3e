#!/usr/bin/python3
"""Expert-parallel inference end to end: `mpirun -np 2 moepp generate | eval | serve --ep-size 2` (the FFN
experts split over two ranks, rank 0 leading, docs/distributed.md) against the same command in one
process. Run by CTest (label mpi) as
    /usr/bin/python3 tests/mpi/test_ep_inference.py --moepp PATH/TO/moepp --mpirun PATH/TO/mpirun

On the tiny random MoE++ model of test_serve.py (4 FFN + 4 zero-computation experts, 320-piece tokenizer):
  - generate at temperature 0 prints exactly the single process's text (F32 and INT8 weights);
  - eval ppl gives the same JSON (nll_sum bit for bit), eval mc the same scores and per-question details;
  - serve under mpirun answers a temperature-0 completion with the single-process server's text (and
    the same "moepp_routing" report: FFN experts of every rank counted), and
    SIGTERM to its ranks ends the whole job with exit 0 within 20 s;
  - --ep-size 3 at np 2 fails with the message printed by both ranks; --ep-size 2 without mpirun fails;
  - ranks given different models (mpirun's MPMD form: rank 1 reads a copy whose config.json differs, or
    whose dense weights differ) fail at start-up on both ranks, naming what differs and rank 1.
Each rank runs one OpenMP thread (as the single-process runs do). Prints `N passed, M failed`.
"""
import json
import os
import re
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import http.client

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, os.path.join(HERE, "..", "python"))

from helpers import Tally, moepp_binary_missing, parse_test_args  # noqa: E402
from test_serve import make_model  # noqa: E402

ENV = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1", OMP_NUM_THREADS="1")
MPI_FLAGS = ["--oversubscribe", "--bind-to", "none", "--mca", "mpi_yield_when_idle", "1"]


def run(cmd, timeout=120):
    return subprocess.run(cmd, capture_output=True, text=True, env=ENV, timeout=timeout)


def without_seconds(stdout):
    j = json.loads(stdout)
    j.pop("seconds", None)
    return j


class Serve:
    """`moepp serve --port 0` as a child (cmd may start with mpirun); the port is read from its stderr."""

    def __init__(self, cmd):
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=ENV)
        self.log = []
        deadline = time.time() + 60
        while time.time() < deadline:
            r, _, _ = select.select([self.proc.stderr], [], [], 0.5)
            if r:
                line = self.proc.stderr.readline().decode(errors="replace")
                self.log.append(line)
                m = re.search(r"listening on http://[\d.]+:(\d+)", line)
                if m:
                    self.port = int(m.group(1))
                    return
            if self.proc.poll() is not None:
                break
        self.proc.kill()
        raise RuntimeError("serve did not start: " + "".join(self.log))

    def complete(self, prompt, routing=False):
        """The greedy completion's text; with routing, (text, its moepp_routing report)."""
        req = {"prompt": prompt, "max_tokens": 24, "temperature": 0}
        if routing:
            req["moepp_routing"] = True
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        c.request("POST", "/v1/completions", body=json.dumps(req), headers={"Content-Type": "application/json"})
        r = c.getresponse()
        body = json.loads(r.read())
        c.close()
        assert r.status == 200, body
        ch = body["choices"][0]
        return (ch["text"], ch["moepp_routing"]) if routing else ch["text"]

    def ranks(self):
        """The pids of mpirun's children (the ranks; mpirun launches local ranks itself)."""
        pids = []
        for d in os.listdir("/proc"):
            if d.isdigit():
                try:
                    with open(f"/proc/{d}/stat") as f:
                        stat = f.read()
                except OSError:
                    continue
                if int(stat[stat.rindex(")") + 2:].split()[1]) == self.proc.pid:  # field 4: the parent
                    pids.append(int(d))
        return pids

    def finish(self, timeout):
        """Waits for the exit; returns (exit code or None on timeout, seconds, stderr)."""
        t0 = time.time()
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            rc = None
        self.log.append(self.proc.stderr.read().decode(errors="replace"))
        return rc, time.time() - t0, "".join(self.log)


def main():
    args, exe = parse_test_args(case_filter=False, verbose=False,
                                add_options=lambda ap: ap.add_argument("--mpirun", default="mpirun"))
    if moepp_binary_missing(exe):
        return 1
    mpirun = [args.mpirun, *MPI_FLAGS, "-np", "2"]
    t = Tally(print_run_time=True)
    with tempfile.TemporaryDirectory() as tmp:
        model = os.path.join(tmp, "tiny")
        make_model(exe, model)
        text = os.path.join(tmp, "valid.txt")
        with open(os.path.join(ROOT, "data", "slice", "valid.txt"), encoding="utf-8") as f, \
                open(text, "w", encoding="utf-8") as g:
            g.write(f.read(4000))
        tasks = os.path.join(ROOT, "data", "tasks", "example_mc.jsonl")

        def generate_equals_one_process():
            for dtype in ("f32", "int8"):
                gen = ["generate", "--model", model, "--prompt", "The king said", "--temperature", "0",
                       "--max-tokens", "40", "--ignore-eos", "--dtype", dtype]
                one = run([exe, *gen])
                two = run([*mpirun, exe, *gen, "--ep-size", "2"])
                assert one.returncode == 0 and two.returncode == 0, two.stderr[-2000:]
                assert one.stdout == two.stdout and len(one.stdout) > len("The king said"), \
                    f"{dtype}: {one.stdout!r} != {two.stdout!r}"
                assert "expert group of 2 ranks" in two.stderr, two.stderr[-1000:]

        def eval_ppl_equals_one_process():
            ev = ["eval", "ppl", "--model", model, "--text", text, "--window", "64", "--quiet"]
            one = run([exe, *ev])
            two = run([*mpirun, exe, *ev, "--ep-size", "2"])
            assert one.returncode == 0 and two.returncode == 0, two.stderr[-2000:]
            assert len(two.stdout.splitlines()) == 1, f"only rank 0 prints: {two.stdout!r}"
            a, b = without_seconds(one.stdout), without_seconds(two.stdout)
            assert a == b, f"{a} != {b}"

        def eval_mc_equals_one_process():
            d1, d2 = os.path.join(tmp, "mc1.jsonl"), os.path.join(tmp, "mc2.jsonl")
            ev = ["eval", "mc", "--model", model, "--tasks", tasks, "--quiet"]
            one = run([exe, *ev, "--details", d1])
            two = run([*mpirun, exe, *ev, "--details", d2, "--ep-size", "2"])
            assert one.returncode == 0 and two.returncode == 0, two.stderr[-2000:]
            assert without_seconds(one.stdout) == without_seconds(two.stdout), f"{one.stdout} != {two.stdout}"
            with open(d1) as f1, open(d2) as f2:
                assert f1.read() == f2.read(), "per-question details differ"

        def serve_equals_one_process_and_sigterm_ends_every_rank():
            srv = ["serve", "--model", model, "--port", "0"]
            one = Serve([exe, *srv])
            try:
                want = one.complete("The king said")
                want_routing = one.complete("The king", routing=True)
            finally:
                one.proc.terminate()
                one.finish(20)
            two = Serve([*mpirun, exe, *srv, "--ep-size", "2"])
            try:
                got = [two.complete("The king said"), two.complete("Once upon")]
                got_routing = two.complete("The king", routing=True)
                ranks = two.ranks()
            except BaseException:
                two.proc.kill()
                raise
            assert got[0] == want, f"{got[0]!r} != {want!r}"
            # The routing report counts every rank's FFN experts: the same as one process.
            assert got_routing == want_routing, f"{got_routing} != {want_routing}"
            assert len(ranks) == 2, f"mpirun's children: {ranks}"
            for pid in ranks:  # as a service manager stops a job: every rank gets SIGTERM
                os.kill(pid, signal.SIGTERM)
            rc, secs, log = two.finish(20)
            assert rc == 0, f"exit {rc} after {secs:.1f} s: {log[-2000:]}"
            assert "moepp serve: stopped" in log, log[-2000:]

        def ep_size_must_equal_the_ranks():
            p = run([*mpirun, exe, "generate", "--model", model, "--prompt", "x", "--ep-size", "3"])
            assert p.returncode != 0, "exit 0"
            for r in (0, 1):
                want = rf"error \(rank {r} of 2\): generate: --ep-size 3 under mpirun with 2 processes"
                assert re.search(want, p.stderr), p.stderr[-2000:]
            q = run([exe, "eval", "ppl", "--model", model, "--text", text, "--ep-size", "2"])
            assert q.returncode == 1 and "--ep-size 2 needs 2 processes" in q.stderr, q.stderr[-1000:]

        def ranks_with_different_models_are_refused():
            import safetensors_np as st  # noqa: E402
            other_cfg, other_w = os.path.join(tmp, "other_cfg"), os.path.join(tmp, "other_w")
            shutil.copytree(model, other_cfg)
            shutil.copytree(model, other_w)
            with open(os.path.join(other_cfg, "config.json")) as f:
                cfg = json.load(f)
            cfg["rms_norm_eps"] = 1e-5
            with open(os.path.join(other_cfg, "config.json"), "w") as f:
                json.dump(cfg, f)
            w = st.load(os.path.join(model, "model.safetensors"))
            w["model.norm.weight"] = w["model.norm.weight"] * 1.5
            st.save(os.path.join(other_w, "model.safetensors"), w)
            for other, what in ((other_cfg, "config.json"), (other_w, "the dense weights")):
                gen = ["generate", "--prompt", "x", "--ep-size", "2", "--model"]
                p = run([args.mpirun, *MPI_FLAGS, "-np", "1", exe, *gen, model, ":", "-np", "1", exe, *gen, other])
                assert p.returncode != 0, "exit 0"
                for r in (0, 1):
                    want = (rf"error \(rank {r} of 2\): .*{re.escape(what)}.* differs between ranks: "
                            r"rank 1 differs from rank 0")
                    assert re.search(want, p.stderr), p.stderr[-2000:]

        t.run_each(generate_equals_one_process, eval_ppl_equals_one_process, eval_mc_equals_one_process,
                   serve_equals_one_process_and_sigterm_ends_every_rank, ep_size_must_equal_the_ranks,
                   ranks_with_different_models_are_refused)
    return t.finish()


if __name__ == "__main__":
    sys.exit(main())
