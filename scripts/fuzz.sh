#!/usr/bin/env bash
# Builds the libFuzzer target for the safetensors header parser with clang (separate build dir
# build-fuzz: -DMOEPP_FUZZ=ON -DMOEPP_TESTS=OFF) and runs it for a bounded time.
# Usage: scripts/fuzz.sh [seconds=60]. Exits non-zero when the fuzzer finds a crash, a sanitizer
# report, an unexpected exception, a timeout or an out-of-memory; the reproducer is written to
# build-fuzz/fuzz-artifacts/. Seeds: fuzz/corpus (read-only); new inputs go to build-fuzz/fuzz-corpus.
set -euo pipefail

secs="${1:-60}"
if ! [[ "$secs" =~ ^[0-9]+$ ]] || [ "$secs" -lt 1 ]; then
  echo "usage: $0 [seconds>=1]" >&2
  exit 2
fi

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="$root/build-fuzz"
target=safetensors_header_fuzz

generator=()
if command -v ninja >/dev/null 2>&1; then generator=(-G Ninja); fi
# A build dir configured with another compiler cannot be switched: start it afresh.
if [ -f "$build/CMakeCache.txt" ] && ! grep -q '^CMAKE_CXX_COMPILER:[A-Z]*=.*clang++' "$build/CMakeCache.txt"; then
  rm -rf "$build"
fi
CC=clang CXX=clang++ cmake -S "$root" -B "$build" "${generator[@]}" \
  -DCMAKE_CXX_COMPILER=clang++ -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DMOEPP_FUZZ=ON -DMOEPP_TESTS=OFF -DMOEPP_NATIVE=OFF >/dev/null
cmake --build "$build" --target "$target"

work="$build/fuzz-corpus"
artifacts="$build/fuzz-artifacts"
mkdir -p "$work" "$artifacts"

export ASAN_OPTIONS="${ASAN_OPTIONS:-abort_on_error=1:detect_leaks=1}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1}"

set +e
"$build/fuzz/$target" \
  -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -max_len=8192 \
  -dict="$root/fuzz/safetensors.dict" -artifact_prefix="$artifacts/" -print_final_stats=1 \
  "$work" "$root/fuzz/corpus"
rc=$?
set -e
if [ "$rc" -ne 0 ]; then
  echo "fuzz: FINDING (exit code $rc); reproducer in $artifacts/" >&2
  exit "$rc"
fi
echo "fuzz: no findings in ${secs}s"
