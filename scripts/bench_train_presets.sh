#!/usr/bin/env bash
# Training tokens/s of several presets side by side (the research issue's "measured training tokens/s
# of each"): ROUNDS rounds over the presets, the order reversed every other round, each one
# `moepp bench train --config configs/<preset>.json` (a freshly initialised model of the preset, its
# batch and sequence length; forward, backward, clipping, AdamW). Raw JSON lines (each with the commit,
# CPU, threads and load average) go to OUT; then one line per preset: the median tokens/s over the rounds
# with its range, and the median FFN experts per token the router chose (at initialisation, which is not
# the trained model's routing: see docs/results.md).
# Usage: scripts/bench_train_presets.sh OUT.jsonl PRESET [PRESET ...]
# Environment: MOEPP_BIN (default build/moepp), ROUNDS (default 3), STEPS (timed steps, default 5),
# THREADS (OpenMP threads, default 2). Run it on a quiet machine.
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -ge 2 ] || { echo "usage: scripts/bench_train_presets.sh OUT.jsonl PRESET [PRESET ...]" >&2; exit 2; }
out="$1"
shift
presets=("$@")
bin="${MOEPP_BIN:-build/moepp}"
rounds="${ROUNDS:-3}" steps="${STEPS:-5}" threads="${THREADS:-2}"
for v in "$rounds" "$steps" "$threads"; do
  [[ "$v" =~ ^[1-9][0-9]*$ ]] || { echo "bench_train_presets: ROUNDS, STEPS and THREADS must be positive integers" >&2; exit 2; }
done
[ -x "$bin" ] || { echo "bench_train_presets: $bin is not an executable (build first, or set MOEPP_BIN)" >&2; exit 2; }
for p in "${presets[@]}"; do
  [ -f "configs/$p.json" ] || { echo "bench_train_presets: configs/$p.json does not exist" >&2; exit 2; }
done
tmp="$out.part"
: > "$tmp"
for ((r = 1; r <= rounds; r++)); do
  order=("${presets[@]}")
  if ((r % 2 == 0)); then
    order=()
    for ((i = ${#presets[@]} - 1; i >= 0; i--)); do order+=("${presets[i]}"); done
  fi
  for p in "${order[@]}"; do
    echo "bench_train_presets: round $r/$rounds $p $(date -u +%H:%M:%S)" >&2
    OMP_NUM_THREADS="$threads" "$bin" bench train --config "configs/$p.json" --steps "$steps" --warmup 1 |
      /usr/bin/python3 -c 'import json, sys
for line in sys.stdin:
    j = json.loads(line)
    j["preset"], j["round"] = sys.argv[1], int(sys.argv[2])
    print(json.dumps(j))' "$p" "$r" >> "$tmp"
  done
done
mv "$tmp" "$out"
/usr/bin/python3 - "$out" <<'EOF'
import json, statistics, sys
by = {}
for line in open(sys.argv[1]):
    j = json.loads(line)
    by.setdefault(j["preset"], []).append(j)
for p, js in by.items():
    t = [j["moepp_tokens_per_s"] for j in js]
    f = [j["moepp_ffn_experts_per_token"] for j in js]
    print(json.dumps({"preset": p, "rounds": len(js), "tokens_per_s_median": statistics.median(t),
                      "tokens_per_s_min": min(t), "tokens_per_s_max": max(t),
                      "ffn_experts_per_token_at_init": statistics.median(f)}))
EOF
echo "bench_train_presets: wrote $out" >&2
