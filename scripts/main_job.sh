#!/usr/bin/env bash
# The main job: install, build, train a small MoE++ model on the committed corpus slice
# (configs/slice-moepp.json) and print its validation loss and a generated sample.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/build.sh build
out="${1:-runs/slice}"
if [ -f "$out/latest" ]; then resume=--resume; else resume=; fi
./build/moepp train --config configs/slice-moepp.json --out "$out" $resume
