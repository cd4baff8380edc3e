#!/usr/bin/python3
"""`moepp serve` against OpenAI's official Node SDK, run by CTest as
  /usr/bin/python3 tests/sdk/test_openai_sdk.py --moepp PATH/TO/moepp --work DIR

The `openai` package, pinned in package.json / package-lock.json beside this file, is installed into
DIR/node_modules with `npm ci --ignore-scripts` (skipped when the pinned version is already there;
node and npm come from `bash scripts/setup.sh`). The tiny random MoE++ model of tests/python/test_serve.py
is served with an API key, `--model-name tiny` and `--served-model-name alias`, and openai_sdk_test.mjs
calls it through the SDK (see its header): models list / retrieve / unknown (404 model_not_found), chat
and completions with logprobs, streamed and not, the SDK's stream helper, n choices, penalties, and the
SDK's error classes for 400, 401 and 404. Prints `N passed, M failed`; exit 1 on failure.
"""
import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "tests", "python"))

import helpers as H  # noqa: E402
from test_serve import Server, make_model  # noqa: E402

KEY = "sdk-test-key-0123456789"


def main():
    a, exe = H.parse_test_args(case_filter=False, verbose=False, add_options=lambda ap: ap.add_argument(
        "--work", required=True, help="directory for node_modules (git-ignored: the build tree)"))
    if H.moepp_binary_missing(exe):
        return 1
    tally = H.Tally(print_run_time=True)
    work = os.path.abspath(a.work)
    try:
        H.npm_ci(HERE, work, ("package.json", "package-lock.json", "openai_sdk_test.mjs"), "openai")
    except Exception as e:  # noqa: BLE001
        tally.fail(f"setup: {e}")
        return tally.finish()

    with tempfile.TemporaryDirectory() as tmp:
        model = os.path.join(tmp, "tiny")
        make_model(exe, model)
        keyfile = os.path.join(tmp, "key.txt")
        with open(keyfile, "w") as f:
            f.write(KEY + "\n")
        srv = Server(exe, model, "--slots", "4", "--api-key-file", keyfile, "--model-name", "tiny",
                     "--served-model-name", "alias", key=KEY)
        try:
            p = subprocess.run(["node", os.path.join(work, "openai_sdk_test.mjs"), f"http://127.0.0.1:{srv.port}/v1",
                                KEY, "tiny", "alias"], cwd=work, capture_output=True, text=True, timeout=240)
        finally:
            rc = srv.stop()
        lines = (p.stdout + p.stderr).strip().splitlines()
        cases = [l for l in lines if l.startswith(("PASS ", "FAIL "))]
        for line in cases:
            name, _, why = line[5:].partition(": ")
            tally.record(f"sdk_{name}", line.startswith("PASS "), why)
        if not cases or p.returncode not in (0, 1):
            tally.fail(f"openai_sdk_test.mjs exited {p.returncode}: " + "\n".join(lines[-20:]))
        tally.record("server_exits_cleanly", rc == 0, f"exit {rc}: {''.join(srv.log)[-800:]}")
    return tally.finish()


if __name__ == "__main__":
    sys.exit(main())
