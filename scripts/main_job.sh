#!/usr/bin/env bash
# The main job (until the training issue lands): install, build, and run the MoE vs MoE++ layer
# benchmark at the paper's 0.6B layer shape (D 768, I 2048, 8 FFN + 4 zero-computation experts).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/build.sh build
./build/moepp bench layer --cases 768x2048-8+4 --tokens 4096 --reps 2
