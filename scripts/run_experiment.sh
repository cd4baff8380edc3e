#!/usr/bin/env bash
# The miniature of the paper's Table 3 (docs/results.md): vanilla top-2 MoE vs MoE++ at tau 0.25,
# 0.75 and 1.0, identical otherwise, 2 seeds each, on the full corpus. The seeds of a preset run side by
# side, one OpenMP thread each (on 2 cores that beats one 2-thread run after another and does not
# stall when another process takes a core); about 4 x 17 minutes in all.
# Usage: scripts/run_experiment.sh [RUNS_DIR=runs/exp] [SEEDS="1 2"]
# Environment: EXP_THREADS (threads per run, default 1), MOEPP_BIN (a built moepp; default: build it),
# PRESETS (configs/<name>.json to run, default the four of docs/results.md; e.g. the research presets
# "exp-moepp-tau0.75-no-zero exp-adamoe exp-remoe"), STEPS (override every preset's steps, e.g. 1200 for
# 4x the tokens; the run directories are then named <preset>-steps<N>-s<seed>).
# A run that stopped (a new machine, a killed session) is resumed from its latest checkpoint.
set -euo pipefail
cd "$(dirname "$0")/.."
runs="${1:-runs/exp}"
seeds="${2:-1 2}"
threads="${EXP_THREADS:-1}"
presets="${PRESETS:-exp-moe exp-moepp-tau0.25 exp-moepp-tau0.75 exp-moepp-tau1.0}"
steps="${STEPS:-}"
if [ -n "$steps" ] && ! [[ "$steps" =~ ^[1-9][0-9]*$ ]]; then echo "run_experiment: STEPS must be a positive integer, got '$steps'" >&2; exit 2; fi
for preset in $presets; do
  [ -f "configs/$preset.json" ] || { echo "run_experiment: PRESETS: configs/$preset.json does not exist" >&2; exit 2; }
done
bash scripts/setup.sh
[ -f data/corpus/train.txt ] || bash scripts/fetch_corpus.sh
mkdir -p "$runs"
# The runs use a copy of the binary, so that rebuilding build/ meanwhile cannot change a run midway
# (MOEPP_BIN: use that binary instead of building build/).
if [ -n "${MOEPP_BIN:-}" ]; then cp "$MOEPP_BIN" "$runs/moepp"; else bash scripts/build.sh build && cp build/moepp "$runs/moepp"; fi
# The tokenizer and shards are the same for every run (same corpus, same tokenizer settings): made once,
# by a one-step run in $runs/prep, and copied into each run directory.
if [ ! -f "$runs/prep/tokenizer.model" ]; then
  "$runs/moepp" train --config configs/exp-moe.json --out "$runs/prep" --steps 1 --quiet
fi
run_one() {  # preset seed
  local name="$1" step_args=()
  if [ -n "$steps" ]; then name="$1-steps$steps"; step_args=(--steps "$steps"); fi
  local out="$runs/$name-s$2" resume=
  if [ -f "$out/latest" ] && grep -q '"step"' "$out/log.jsonl" 2>/dev/null; then resume=--resume; fi
  if [ ! -f "$out/tokenizer.model" ]; then mkdir -p "$out" && cp -r "$runs/prep/tokenizer.model" "$runs/prep/data" "$out/"; fi
  OMP_NUM_THREADS="$threads" /usr/bin/time -f "$1 seed $2: wall %e s" "$runs/moepp" train --config "configs/$1.json" \
    --out "$out" --seed "$2" "${step_args[@]}" --quiet $resume
  OMP_NUM_THREADS="$threads" "$runs/moepp" analyze --model "$out" --text data/corpus/valid.txt --out "$out/analysis" \
    --max-tokens 20000 > "$out/analyze.log"
}
for preset in $presets; do
  echo "== $preset (seeds $seeds) $(date -u +%H:%M:%S)"
  pids=()
  for seed in $seeds; do run_one "$preset" "$seed" & pids+=($!); done
  for p in "${pids[@]}"; do wait "$p"; done
done
/usr/bin/python3 scripts/plot_losses.py --group-seeds --out "$runs/loss_curves.png" "$runs"/exp-*/
/usr/bin/python3 scripts/summarize_runs.py "$runs"/exp-*/ > "$runs/summary.md"
echo "summary: $runs/summary.md, $runs/loss_curves.png (copy them into docs/results.md and docs/results/)"
