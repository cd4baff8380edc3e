#!/usr/bin/env bash
# Installs every build, test and benchmark dependency of moepp from Debian 12 packages.
# Idempotent: packages already present are skipped by apt. Needs root (or sudo).
set -euo pipefail

PKGS=(
  build-essential cmake ninja-build pkg-config git
  libopenblas-dev libopenblas0-pthread        # GEMM (pthread build; we pin it to 1 thread inside our own OpenMP regions)
  libdnnl-dev ocl-icd-opencl-dev opencl-headers  # oneDNN matmul (find_package(dnnl) needs the OpenCL headers)
  nlohmann-json3-dev libcli11-dev             # JSON, command line
  libsentencepiece-dev                        # tokenizer (SentencePiece BPE, byte fallback)
  libgtest-dev libgmock-dev googletest libbenchmark-dev
  clang libclang-rt-14-dev                    # libFuzzer for the safetensors header fuzz target
  python3 python3-torch python3-numpy         # independent reference implementation used by the parity tests
  libcpp-httplib-dev libssl-dev                # HTTP server of `moepp serve` (linked with its pkg-config flags)
  python3-matplotlib                          # PNG plots of `moepp analyze` and training logs (scripts/plot_*.py)
  openmpi-bin libopenmpi-dev                  # multi-process runs (src/comm/, mpirun) and the MPI tests
  chromium                                    # the chat page's headless-browser test (tests/browser/)
)
# node and npm for that test and the OpenAI SDK test (tests/sdk/; they install playwright-core and the
# `openai` package from npm at their locked versions): Debian's, unless a node with its own
# npm is already there (NodeSource's nodejs bundles npm and conflicts with Debian's npm package).
command -v node >/dev/null || PKGS+=(nodejs)
command -v npm >/dev/null || PKGS+=(npm)

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -eq 0 ]; then
  echo "setup: all ${#PKGS[@]} packages already installed"
  exit 0
fi
echo "setup: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q
$SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
echo "setup: done"
