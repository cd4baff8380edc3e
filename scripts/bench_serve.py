#!/usr/bin/python3
"""Load benchmark of `moepp serve` (docs/serve.md): starts the server on a model, drives it from this
process over loopback (127.0.0.1 only) with N client threads at each concurrency level for a fixed time,
then soaks it at one level for a few minutes, and prints one JSON object (also written to --out):

  levels[]: concurrency, requests, ok, http_429, errors, requests_per_s, tokens_per_s (completion tokens
            of the 200 answers), latency_s {p50, p99, mean, max} of the 200 answers, rss_mb before/after
  soak:     concurrency, seconds, the same figures, rss_mb samples (every --soak-sample seconds) and
            rss_growth_mb (last sample minus the first one taken after the warm-up)

Each client sends non-streaming /v1/completions requests back to back (a fresh connection each, prompt of
a few words, max_tokens fixed, ignore_eos so that every answer has exactly that many tokens, sampled with
temperature 0.8 and a seed per request; with --routing each asks for "moepp_routing" too). Every loop is bounded in time and count and stops by itself.
Python standard library only.

  /usr/bin/python3 scripts/bench_serve.py --moepp build/moepp --model runs/slice \\
      --levels 1,4,16,64 --seconds 20 --soak-seconds 180 --out bench/results/serve.json
"""
import argparse
import http.client
import json
import os
import platform
import re
import select
import subprocess
import sys
import threading
import time

HOST = "127.0.0.1"
MAX_REQUESTS_PER_CLIENT = 100_000  # a bound on every client loop besides its deadline


def rss_mb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def start_server(exe, model, extra, omp_threads):
    env = dict(os.environ, OMP_NUM_THREADS=str(omp_threads))
    proc = subprocess.Popen([exe, "serve", "--model", model, "--host", HOST, "--port", "0", *extra],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    deadline = time.time() + 120
    while time.time() < deadline:
        r, _, _ = select.select([proc.stderr], [], [], 0.5)
        if r:
            line = proc.stderr.readline().decode(errors="replace")
            m = re.search(r"listening on http://[\d.]+:(\d+)", line)
            if m:
                threading.Thread(target=lambda: [None for _ in proc.stderr], daemon=True).start()
                return proc, int(m.group(1)), line.strip()
        if proc.poll() is not None:
            raise RuntimeError(f"moepp serve exited {proc.returncode}: {proc.stderr.read().decode(errors='replace')}")
    proc.kill()
    raise RuntimeError("moepp serve did not start listening within 120 s")


def percentile(xs, q):
    if not xs:
        return None
    xs = sorted(xs)
    i = min(len(xs) - 1, max(0, int(round(q / 100.0 * (len(xs) - 1)))))
    return xs[i]


def drive(port, concurrency, seconds, max_tokens, seed0, routing=False):
    """Runs `concurrency` clients for `seconds`; returns the level's figures (without memory)."""
    lock = threading.Lock()
    lat, tokens, counts = [], [0], {"requests": 0, "ok": 0, "http_429": 0, "errors": 0}
    error_kinds = {}
    t_start = time.time()
    deadline = t_start + seconds

    def client(cid):
        for n in range(MAX_REQUESTS_PER_CLIENT):
            if time.time() >= deadline:
                return
            req = {"prompt": f"The ship number {cid} sailed", "max_tokens": max_tokens,
                   "temperature": 0.8, "seed": seed0 + cid * MAX_REQUESTS_PER_CLIENT + n, "ignore_eos": True}
            if routing:
                req["moepp_routing"] = True
            body = json.dumps(req).encode()
            t0 = time.time()
            status, ntok, kind = None, 0, None
            try:
                c = http.client.HTTPConnection(HOST, port, timeout=max(60.0, seconds * 2))
                c.request("POST", "/v1/completions", body=body, headers={"Content-Type": "application/json"})
                r = c.getresponse()
                payload = r.read()
                status = r.status
                c.close()
                if status == 200:
                    ntok = json.loads(payload)["usage"]["completion_tokens"]
            except Exception as e:  # noqa: BLE001
                kind = type(e).__name__
            dt = time.time() - t0
            with lock:
                counts["requests"] += 1
                if status == 200:
                    counts["ok"] += 1
                    lat.append(dt)
                    tokens[0] += ntok
                elif status == 429:
                    counts["http_429"] += 1
                else:
                    counts["errors"] += 1
                    k = kind or f"http_{status}"
                    error_kinds[k] = error_kinds.get(k, 0) + 1
            if status == 429:
                time.sleep(0.05)  # the server asked to retry later

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=seconds + 180)
    wall = time.time() - t_start
    return {"concurrency": concurrency, "seconds": round(wall, 2), **counts, "error_kinds": error_kinds,
            "requests_per_s": round(counts["ok"] / wall, 3), "tokens_per_s": round(tokens[0] / wall, 1),
            "latency_s": {"p50": percentile(lat, 50), "p99": percentile(lat, 99),
                          "mean": (sum(lat) / len(lat)) if lat else None, "max": max(lat) if lat else None}}


def git_commit():
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              cwd=os.path.dirname(os.path.abspath(__file__)), timeout=10).stdout.strip()
    except Exception:  # noqa: BLE001
        return ""


def cpu_name():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--moepp", required=True)
    ap.add_argument("--model", required=True, help="checkpoint or run directory")
    ap.add_argument("--levels", default="1,4,16,64", help="client concurrency levels")
    ap.add_argument("--seconds", type=float, default=20, help="per level")
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--slots", type=int, default=8)
    ap.add_argument("--max-queue", type=int, default=64)
    ap.add_argument("--omp-threads", type=int, default=1,
                    help="OMP_NUM_THREADS of the server (1: no OpenMP barriers stalled by other load)")
    ap.add_argument("--soak-seconds", type=float, default=180, help="0: no soak")
    ap.add_argument("--soak-concurrency", type=int, default=0,
                    help="0: the level with the most requests/s among those without 429s or errors")
    ap.add_argument("--soak-sample", type=float, default=10, help="seconds between memory samples")
    ap.add_argument("--routing", action="store_true",
                    help='every request asks for "moepp_routing" (the per-token routing report)')
    ap.add_argument("--out", default="")
    a = ap.parse_args()
    levels = [int(x) for x in a.levels.split(",") if x]
    exe = os.path.abspath(a.moepp)

    proc, port, banner = start_server(exe, a.model, ["--slots", str(a.slots), "--max-queue", str(a.max_queue)],
                                      a.omp_threads)
    result = {"bench": "serve", "commit": git_commit(), "cpu": cpu_name(), "cores": os.cpu_count(),
              "load_average_at_start": os.getloadavg(), "model": a.model, "server": banner,
              "slots": a.slots, "max_queue": a.max_queue, "omp_threads": a.omp_threads,
              "max_tokens": a.max_tokens, "moepp_routing": a.routing, "seconds_per_level": a.seconds, "levels": []}
    try:
        drive(port, 1, 2, a.max_tokens, 0)  # warm-up: first touches of the weights and the KV cache
        for i, conc in enumerate(levels):
            before = rss_mb(proc.pid)
            lv = drive(port, conc, a.seconds, a.max_tokens, 1_000_000_000 * (i + 1), a.routing)
            lv["rss_mb"] = {"before": round(before, 1), "after": round(rss_mb(proc.pid), 1)}
            result["levels"].append(lv)
            print(json.dumps(lv), file=sys.stderr, flush=True)
        if a.soak_seconds > 0:
            conc = a.soak_concurrency
            if conc <= 0:
                clean = [lv for lv in result["levels"] if lv["http_429"] == 0 and lv["errors"] == 0] or result["levels"]
                conc = max(clean, key=lambda lv: lv["requests_per_s"])["concurrency"]
            samples, stop = [], threading.Event()
            t0 = time.time()

            def sampler():
                while not stop.is_set() and time.time() - t0 < a.soak_seconds + 60:
                    samples.append((round(time.time() - t0, 1), round(rss_mb(proc.pid), 1)))
                    stop.wait(a.soak_sample)

            st = threading.Thread(target=sampler, daemon=True)
            st.start()
            soak = drive(port, conc, a.soak_seconds, a.max_tokens, 9_000_000_000, a.routing)
            stop.set()
            st.join(timeout=5)
            samples.append((round(time.time() - t0, 1), round(rss_mb(proc.pid), 1)))
            warm = [s for s in samples if s[0] >= min(30.0, a.soak_seconds / 4)] or samples
            soak["rss_mb_samples"] = samples
            soak["rss_growth_mb"] = round(warm[-1][1] - warm[0][1], 1)
            result["soak"] = soak
        result["load_average_at_end"] = os.getloadavg()
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
    text = json.dumps(result, indent=1)
    print(text)
    if a.out:
        os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
        with open(a.out, "w") as f:
            f.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
