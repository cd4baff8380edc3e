#!/usr/bin/python3
"""The chat page of `moepp serve` (GET /, docs/serve.md "Chat page") in a real headless browser, run by
CTest as  /usr/bin/python3 tests/browser/test_page.py --moepp PATH/TO/moepp --work DIR

Needs node, npm and Debian's chromium (bash scripts/setup.sh installs them); a missing one fails the
test with a message saying so. playwright-core, pinned in package.json / package-lock.json beside this
file, is installed into DIR/node_modules with `npm ci --ignore-scripts` (no browser download; skipped
when the pinned version is already there). A tiny MoE++ model is written to a temporary directory: the
model of tests/python/test_serve.py with 65536 positions and two tokenizer pieces renamed "<b>" and
"</b>", whose embeddings, final norm and head are set so that it answers "<b></b><b></b>..." (each
token a whole tag) while its routing stays random. `moepp serve` runs it with an API key; the HTTP checks here (the page
and its files, their types, the Content-Security-Policy on every response, the page open without the
key) come first, then page_test.mjs drives the browser (see its header). Prints `N passed, M failed`;
exit 1 on failure.
"""
import http.client
import json
import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "tests", "python"))

import helpers as H  # noqa: E402
from test_serve import Server, VOCAB, expect  # noqa: E402

CTX = 65536
KEY = "page-test-key-0123456789"
CHROMIUM = os.environ.get("MOEPP_CHROMIUM", "/usr/bin/chromium")


def tool_check():
    if not os.access(CHROMIUM, os.X_OK):
        raise RuntimeError(f"missing {CHROMIUM}: install it with `bash scripts/setup.sh` (Debian package chromium)")


def make_model(exe, d):
    import numpy as np  # noqa: E402
    import model_ref as M  # noqa: E402
    import safetensors_np as st  # noqa: E402
    os.makedirs(d, exist_ok=True)
    text = os.path.join(d, "tok_train.txt")
    with open(os.path.join(ROOT, "data", "slice", "train.txt"), encoding="utf-8") as f, \
            open(text, "w", encoding="utf-8") as g:
        g.write(f.read(60_000))
    tok = os.path.join(d, "tokenizer.model")
    p = subprocess.run([exe, "tokenizer", "train", "--input", text, "--vocab-size", str(VOCAB), "--out", tok],
                       capture_output=True, text=True, timeout=120)
    if p.returncode != 0:
        raise RuntimeError(f"tokenizer train failed: {p.stderr}")

    # Two pieces renamed "<b>" and "</b>" in the tokenizer file: single tokens whose text is a whole tag
    # (SentencePiece never learns one: it splits '<' from letters), so a page that put a token's text
    # in as markup would make an element of it.
    open_tag, close_tag = VOCAB - 2, VOCAB - 1
    with open(tok, "rb") as f:
        proto = f.read()
    with open(tok, "wb") as f:
        f.write(rename_pieces(proto, {open_tag: "<b>", close_tag: "</b>"}))
    cfg = {"architectures": ["MoeForCausalLM"], "model_type": "MoE++", "vocab_size": VOCAB, "hidden_size": 32,
           "intermediate_size": 48, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
           "max_position_embeddings": CTX, "num_experts": [8], "n_zero_experts": 1, "n_copy_experts": 1,
           "n_constant_experts": 2, "rms_norm_eps": 1e-6, "rope_theta": 10000.0, "hidden_act": "silu",
           "tie_word_embeddings": False, "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0}
    W = M.make_weights(cfg, 3)
    # Dimensions 0-2 of the embeddings say which token this is ("<b>", "</b>", any other) with a value
    # that drowns what the blocks add; the final norm keeps only them and the head maps "<b>" to "</b>"
    # and every other token to "<b>". The blocks keep their random weights: routing varies.
    E = W["model.embed_tokens.weight"]
    E[:, 0:3] = 0.0
    E[:, 2] = 100.0
    for t, dim in ((open_tag, 0), (close_tag, 1)):
        E[t, 2] = 0.0
        E[t, dim] = 100.0
    norm = np.zeros_like(W["model.norm.weight"])
    norm[0:3] = 1.0
    W["model.norm.weight"] = norm
    head = np.zeros_like(W["lm_head.weight"])
    head[close_tag, 0] = head[open_tag, 1] = head[open_tag, 2] = 1.0
    W["lm_head.weight"] = head
    st.save(os.path.join(d, "model.safetensors"), W)
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(cfg, f)


def _varint(buf, i):
    v = shift = 0
    while True:
        b = buf[i]
        i += 1
        v |= (b & 0x7F) << shift
        shift += 7
        if b < 0x80:
            return v, i


def _enc_varint(v):
    out = bytearray()
    while True:
        b = v & 0x7F
        v >>= 7
        out.append(b | (0x80 if v else 0))
        if not v:
            return bytes(out)


def _fields(buf):
    """(field number, wire type, raw bytes of the whole field, payload of a length-delimited one)."""
    i = 0
    while i < len(buf):
        start = i
        key, i = _varint(buf, i)
        wt = key & 7
        payload = None
        if wt == 0:
            _, i = _varint(buf, i)
        elif wt == 1:
            i += 8
        elif wt == 5:
            i += 4
        elif wt == 2:
            n, i = _varint(buf, i)
            payload = buf[i:i + n]
            i += n
        else:
            raise ValueError(f"tokenizer.model: wire type {wt} not expected")
        yield key >> 3, wt, buf[start:i], payload


def _length_field(field, payload):
    return _enc_varint(field << 3 | 2) + _enc_varint(len(payload)) + payload


def rename_pieces(proto, renames):
    """A SentencePiece ModelProto (field 1: the pieces, each {1: piece, 2: score, 3: type}) with the
    pieces of the given ids renamed."""
    out, index = bytearray(), 0
    for field, wt, raw, payload in _fields(proto):
        if field == 1 and wt == 2:
            if index in renames:
                piece = bytearray()
                for f2, _, raw2, _ in _fields(payload):
                    piece += _length_field(1, renames[index].encode()) if f2 == 1 else raw2
                raw = _length_field(1, bytes(piece))
            index += 1
        out += raw
    return bytes(out)


def get(port, path, headers=None):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    c.request("GET", path, headers=headers or {})
    r = c.getresponse()
    body = r.read()
    c.close()
    return r.status, {k.lower(): v for k, v in r.getheaders()}, body


def main():
    a, exe = H.parse_test_args(case_filter=False, verbose=False, add_options=lambda ap: ap.add_argument(
        "--work", required=True, help="directory for node_modules (git-ignored: the build tree)"))
    if H.moepp_binary_missing(exe):
        return 1
    tally = H.Tally(print_run_time=True)
    work = os.path.abspath(a.work)
    try:
        tool_check()
        # playwright-core at its locked version, without its browser download (Debian's chromium is used).
        H.npm_ci(HERE, work, ("package.json", "package-lock.json", "page_test.mjs"), "playwright-core",
                 env={"PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD": "1"})
    except Exception as e:  # noqa: BLE001
        tally.fail(f"setup: {e}")
        return tally.finish()

    with tempfile.TemporaryDirectory() as tmp:
        model = os.path.join(tmp, "tiny")
        make_model(exe, model)
        keyfile = os.path.join(tmp, "key.txt")
        with open(keyfile, "w") as f:
            f.write(KEY + "\n")
        srv = Server(exe, model, "--slots", "2", "--api-key-file", keyfile, key=KEY)
        try:
            def page_files_and_headers():
                csp = None
                for path, ctype in (("/", "text/html"), ("/app.js", "text/javascript"), ("/app.css", "text/css")):
                    status, h, body = get(srv.port, path)  # no key: the page is open
                    expect(status == 200 and h.get("content-type", "").startswith(ctype) and body,
                           f"GET {path}: {status} {h.get('content-type')}")
                    expect(h.get("x-content-type-options") == "nosniff", f"GET {path}: no nosniff")
                    csp = h.get("content-security-policy", "")
                    expect("default-src 'none'" in csp and "script-src 'self'" in csp, f"GET {path}: CSP {csp!r}")
                status, h, _ = get(srv.port, "/v1/models")  # the API still needs the key
                expect(status == 401 and h.get("content-security-policy") == csp, f"/v1/models: {status} {h}")
                status, _, _ = get(srv.port, "/favicon.ico")
                expect(status == 204, f"/favicon.ico: {status}")
                _, _, html = get(srv.port, "/")
                expect(b"<script src=\"/app.js\"" in html and b"<style" not in html, "index.html: inline style")

            def page_in_headless_chromium():
                p = subprocess.run(["node", os.path.join(work, "page_test.mjs"), f"http://127.0.0.1:{srv.port}/",
                                    KEY, str(srv.proc.pid), CHROMIUM], cwd=work, capture_output=True, text=True,
                                   timeout=120)
                out = (p.stdout + p.stderr).strip()
                print("\n".join("  " + line for line in out.splitlines()), flush=True)
                expect(p.returncode == 0, f"page_test.mjs exited {p.returncode}")

            tally.run_each(page_files_and_headers, page_in_headless_chromium)
        finally:
            rc = srv.stop()  # stopped by the page test's SIGTERM mid-reply (or here)
        tally.record("server_exits_cleanly_after_sigterm_mid_stream", rc == 0 and any("stopped" in l for l in srv.log),
                     f"exit {rc}: {''.join(srv.log)[-800:]}")
    return tally.finish()


if __name__ == "__main__":
    sys.exit(main())
