#!/usr/bin/env bash
# The project's test command: installs what is missing, builds (build/), runs every test through CTest
# (GoogleTest unit tests and the PyTorch parity tests).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/build.sh build
cd build && ctest --output-on-failure -j "$(nproc)"
