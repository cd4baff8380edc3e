#!/usr/bin/env bash
# Builds the small committed corpus slice data/slice/{train,valid}.txt (docs/data.md, "The slice")
# from the full corpus that scripts/fetch_corpus.sh extracted into data/corpus/raw/*.jsonl.
# Deterministic: the same corpus gives the same bytes. Per source and split, documents are taken in
# the order of FNV-1a-64("slice/<source>/<id>") until the source's byte budget is spent; the document
# that crosses the budget is cut at the last line break (else sentence end, else space) that fits,
# when at least 4000 bytes of budget remain. Slice train documents come only from the corpus train
# split, slice valid documents only from the valid split. Brown is left out (its licence is not
# public domain / CC0; see docs/data.md). Output: the corpus text format (one blank line between
# documents), at most 2,000,000 bytes in all.
# Usage: scripts/make_slice.sh [--check]   (--check: rebuild into a temp dir and compare with data/slice/)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
RAW="$ROOT/data/corpus/raw"
OUT="$ROOT/data/slice"
CHECK=0
[ "${1:-}" = "--check" ] && CHECK=1

for s in sotu moby_dick web kjv; do
  [ -f "$RAW/$s.jsonl" ] || { echo "make_slice: error: $RAW/$s.jsonl missing; run scripts/fetch_corpus.sh first" >&2; exit 1; }
done

DEST="$OUT"
if [ "$CHECK" -eq 1 ]; then DEST="$(mktemp -d)"; trap 'rm -rf "$DEST"' EXIT; fi
mkdir -p "$DEST"

python3 - "$RAW" "$DEST" <<'PY'
import json, os, sys

raw, dest = sys.argv[1:3]
# Byte budgets of document text per source (train, valid); the sum plus separators stays < 2,000,000.
BUDGETS = [("sotu", 700_000, 50_000), ("moby_dick", 400_000, 30_000),
           ("web", 370_000, 25_000), ("kjv", 370_000, 25_000)]
MIN_CUT = 4000
LIMIT = 2_000_000

def fnv1a64(data: bytes) -> int:
    h = 0xCBF29CE484222325
    for b in data:
        h ^= b
        h = (h * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h

def cut(text: str, budget: int) -> str:
    b = text.encode("utf-8")[:budget].decode("utf-8", errors="ignore")
    for sep, keep in (("\n", 0), (". ", 1), (" ", 0)):
        i = b.rfind(sep)
        if i >= len(b) // 2:
            return b[: i + keep].rstrip()
    return b.rstrip()

out = {"train": [], "valid": []}
report = []
for source, train_budget, valid_budget in BUDGETS:
    with open(os.path.join(raw, f"{source}.jsonl"), encoding="utf-8") as f:
        recs = [json.loads(l) for l in f if l.strip()]
    for split, budget in (("train", train_budget), ("valid", valid_budget)):
        docs = sorted((r for r in recs if r["split"] == split),
                      key=lambda r: fnv1a64(f"slice/{source}/{r['id']}".encode("utf-8")))
        left, taken, cut_ids = budget, [], []
        for r in docs:
            n = len(r["text"].encode("utf-8"))
            if n <= left:
                out[split].append(r["text"]); taken.append(r["id"]); left -= n
            elif left >= MIN_CUT:
                out[split].append(cut(r["text"], left)); taken.append(r["id"]); cut_ids.append(r["id"])
                left -= len(out[split][-1].encode("utf-8"))
            if left < MIN_CUT:
                break
        report.append(f"{source}/{split}: {len(taken)} docs ({len(cut_ids)} cut), {budget - left:,d} bytes")

total = 0
for split, docs in out.items():
    data = "\n\n".join(docs) + "\n"
    total += len(data.encode("utf-8"))
    tmp = os.path.join(dest, f"{split}.txt.tmp")
    with open(tmp, "w", encoding="utf-8", newline="\n") as f:
        f.write(data)
    os.replace(tmp, os.path.join(dest, f"{split}.txt"))
for line in report:
    print("make_slice:", line)
if total > LIMIT:
    sys.exit(f"make_slice: error: slice is {total} bytes, over the {LIMIT} byte limit")
print(f"make_slice: {total:,d} bytes in all")
PY

if [ "$CHECK" -eq 1 ]; then
  for s in train valid; do
    cmp -s "$DEST/$s.txt" "$OUT/$s.txt" || { echo "make_slice: data/slice/$s.txt differs from a fresh build" >&2; exit 1; }
  done
  echo "make_slice: data/slice/ matches a fresh build"
else
  echo "make_slice: wrote data/slice/train.txt ($(wc -c <"$OUT/train.txt") B), data/slice/valid.txt ($(wc -c <"$OUT/valid.txt") B)"
fi
