#!/usr/bin/env bash
# The miniature of the paper's Table 3 (docs/results.md): vanilla top-2 MoE vs MoE++ at tau 0.25,
# 0.75 and 1.0, identical otherwise, 2 seeds each, on the full corpus. About 8 x 15 minutes on 2 cores.
# Usage: scripts/run_experiment.sh [RUNS_DIR=runs/exp] [SEEDS="1 2"]
set -euo pipefail
cd "$(dirname "$0")/.."
runs="${1:-runs/exp}"
seeds="${2:-1 2}"
bash scripts/setup.sh
[ -f data/corpus/train.txt ] || bash scripts/fetch_corpus.sh
bash scripts/build.sh build
mkdir -p "$runs"
first=""
for preset in exp-moe exp-moepp-tau0.25 exp-moepp-tau0.75 exp-moepp-tau1.0; do
  for seed in $seeds; do
    out="$runs/$preset-s$seed"
    if [ -f "$out/latest" ] && grep -q '"step"' "$out/log.jsonl" 2>/dev/null; then resume=--resume; else resume=; fi
    # The tokenizer and shards are the same for every run: prepare them once, copy them after.
    if [ -n "$first" ] && [ ! -f "$out/tokenizer.model" ]; then
      mkdir -p "$out" && cp -r "$first/tokenizer.model" "$first/data" "$out/"
    fi
    echo "== $preset seed $seed -> $out"
    /usr/bin/time -f "wall %e s" ./build/moepp train --config "configs/$preset.json" --out "$out" --seed "$seed" $resume
    [ -n "$first" ] || first="$out"
    ./build/moepp analyze --model "$out" --text data/corpus/valid.txt --out "$out/analysis" --max-tokens 20000
  done
done
/usr/bin/python3 scripts/plot_losses.py --out docs/results_loss_curves.png "$runs"/*/
/usr/bin/python3 scripts/summarize_runs.py "$runs"/*/ > "$runs/summary.md"
echo "summary: $runs/summary.md (copy its table into docs/results.md)"
