#!/usr/bin/env bash
# The quality cost of each weight dtype on one trained model (issue 12, item 1): perplexity on a text
# and the multiple-choice score, at F32, BF16, INT8 and Q4: moepp eval's own JSON lines (they name the
# dtype and the model), two per dtype.
# Usage: scripts/measure_quality.sh MODEL_DIR TEXT OUT.jsonl [TASKS=data/tasks/example_mc.jsonl]
# Environment: MOEPP_BIN (default build/moepp), DTYPES (default "f32 bf16 int8 q4").
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -ge 3 ] || { echo "usage: scripts/measure_quality.sh MODEL_DIR TEXT OUT.jsonl [TASKS]" >&2; exit 2; }
model="$1" text="$2" out="$3" tasks="${4:-data/tasks/example_mc.jsonl}"
bin="${MOEPP_BIN:-build/moepp}"
[ -x "$bin" ] || { echo "measure_quality: $bin is not an executable (build first, or set MOEPP_BIN)" >&2; exit 2; }
[ -e "$model" ] || { echo "measure_quality: MODEL_DIR $model does not exist" >&2; exit 2; }
[ -f "$text" ] || { echo "measure_quality: TEXT $text does not exist" >&2; exit 2; }
[ -f "$tasks" ] || { echo "measure_quality: TASKS $tasks does not exist" >&2; exit 2; }
tmp="$out.part"
: > "$tmp"
for dt in ${DTYPES:-f32 bf16 int8 q4}; do
  echo "measure_quality: $dt $(date -u +%H:%M:%S)" >&2
  "$bin" eval ppl --model "$model" --text "$text" --dtype "$dt" --quiet | tail -1 >> "$tmp"
  "$bin" eval mc --model "$model" --tasks "$tasks" --dtype "$dt" --quiet | tail -1 >> "$tmp"
done
mv "$tmp" "$out"
echo "measure_quality: wrote $out" >&2
