#!/usr/bin/env bash
# Load time and resident memory of the benchmark model's checkpoints (issue 12, item 2): writes the
# random model of `moepp bench infer` (vanilla variant) as an F32 checkpoint, converts it to BF16, INT8
# and Q4 (`moepp convert --dtype`), then times `moepp generate --max-tokens 1` on each: the load time the
# command reports, the wall time of the whole process (load, first touch of the mapped pages, a 2-token
# prefill and one decoded token) and its peak resident memory, REPS times with the file in the page cache
# ("warm") and, when run as root, once after dropping the page cache ("cold"). One JSON line per run,
# and one per conversion ("bench":"convert": its wall time and peak resident memory, which includes the
# F32 source's mapped pages).
# Usage: scripts/measure_load.sh [WORK_DIR=/tmp/moepp_load] [REPS=3] > results.jsonl
# Environment: MOEPP_BIN (default build/moepp), e.g. to compare two builds' conversions.
# Needs: build/moepp, /usr/bin/time, data/corpus/train.txt (scripts/fetch_corpus.sh): a 32000-piece
# tokenizer is trained on a sample of it, so that every id the random model picks decodes.
set -euo pipefail
cd "$(dirname "$0")/.."
work="${1:-/tmp/moepp_load}"
reps="${2:-3}"
bin="${MOEPP_BIN:-build/moepp}"
[ -x "$bin" ] || { echo "measure_load: $bin is missing (bash scripts/build.sh)" >&2; exit 2; }
[ -f data/corpus/train.txt ] || { echo "measure_load: data/corpus/train.txt is missing (bash scripts/fetch_corpus.sh)" >&2; exit 2; }
[ -x /usr/bin/time ] || { echo "measure_load: /usr/bin/time is missing (apt-get install time)" >&2; exit 2; }
rm -rf "$work" && mkdir -p "$work"
commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
cpu=$(grep -m1 "model name" /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')
# --prompt 512 --gen 128: the benchmark's context (max_position_embeddings 640); one rep of F32 is timed too.
OMP_NUM_THREADS=2 "$bin" bench infer --variants moe --dtypes f32 --reps 1 --save-model "$work/f32" >&2
"$bin" tokenizer train --input data/corpus/train.txt --vocab-size 32000 --max-sentences 100000 \
  --out "$work/f32/tokenizer.model" >&2
for d in bf16 int8 q4; do
  OMP_NUM_THREADS=1 /usr/bin/time -o "$work/time.txt" -f "%e %M" "$bin" convert --model "$work/f32" --out "$work/$d" \
    --dtype "$d" >&2
  read -r wall rss < <(tail -n 1 "$work/time.txt")
  echo "{\"bench\":\"convert\",\"dtype\":\"$d\",\"source_bytes\":$(stat -c %s "$work/f32/model.safetensors"),\"out_bytes\":$(stat -c %s "$work/$d/model.safetensors"),\"wall_s\":$wall,\"max_rss_bytes\":$((rss * 1024)),\"commit\":\"$commit\",\"cpu\":\"$cpu\",\"threads\":1,\"loadavg\":\"$(cut -d' ' -f1-3 /proc/loadavg)\"}"
done
one() {  # dtype mode
  local d=$1 mode=$2 log="$work/run.log" tm="$work/time.txt"
  OMP_NUM_THREADS=2 /usr/bin/time -o "$tm" -f "%e %M" "$bin" generate --model "$work/$d" --dtype "$d" --prompt The \
    --max-tokens 1 --ignore-eos --temperature 0 > /dev/null 2> "$log" || { cat "$log" >&2; exit 1; }
  local loaded; loaded=$(grep -o "loaded in [0-9.]* s" "$log" | grep -o "[0-9.]*" || echo null)
  read -r wall rss < <(tail -n 1 "$tm")  # time writes "Command exited with non-zero status N" first on failure
  local bytes; bytes=$(stat -c %s "$work/$d/model.safetensors")
  echo "{\"bench\":\"load\",\"dtype\":\"$d\",\"mode\":\"$mode\",\"file_bytes\":$bytes,\"loaded_s\":${loaded:-null},\"process_wall_s\":$wall,\"max_rss_bytes\":$((rss * 1024)),\"commit\":\"$commit\",\"cpu\":\"$cpu\",\"threads\":2,\"loadavg\":\"$(cut -d' ' -f1-3 /proc/loadavg)\"}"
}
for d in bf16 int8 q4; do
  one "$d" warm >/dev/null  # the page cache holds the file
  for _ in $(seq "$reps"); do one "$d" warm; done
  if [ "$(id -u)" -eq 0 ] && sync && echo 3 > /proc/sys/vm/drop_caches 2>/dev/null; then one "$d" cold; fi
done
