#!/usr/bin/env bash
# Copies the small, committable files of every finished run under RUNS_DIR (a run directory whose
# analysis/analysis.json exists: trained and analysed by scripts/run_experiment.sh) into DEST/<run>/:
# log.jsonl, train_config.json, analyze.log and analysis/analysis.json. Checkpoints, shards and the
# tokenizer stay behind. Unfinished runs are listed and skipped.
# Usage: scripts/collect_runs.sh RUNS_DIR [DEST=docs/results/research_runs]
set -euo pipefail
runs="${1:?usage: scripts/collect_runs.sh RUNS_DIR [DEST]}"
dest="${2:-docs/results/research_runs}"
[ -d "$runs" ] || { echo "collect_runs: $runs is not a directory" >&2; exit 2; }
n=0
for d in "$runs"/exp-*/; do
  name="$(basename "$d")"
  if [ ! -f "$d/analysis/analysis.json" ]; then
    echo "collect_runs: $name: not finished (no analysis/analysis.json), skipped" >&2
    continue
  fi
  mkdir -p "$dest/$name/analysis"
  cp "$d/log.jsonl" "$d/train_config.json" "$d/analyze.log" "$dest/$name/"
  cp "$d/analysis/analysis.json" "$dest/$name/analysis/"
  n=$((n + 1))
done
echo "collect_runs: $n finished runs copied into $dest"
