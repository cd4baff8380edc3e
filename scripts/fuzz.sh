#!/usr/bin/env bash
# Builds every libFuzzer target of fuzz/ (one per parser of outside input; see fuzz/CMakeLists.txt) with
# clang under ASan+UBSan (separate build dir build-fuzz: -DMOEPP_FUZZ=ON -DMOEPP_TESTS=OFF) and runs
# each for a bounded time, one after the other.
# Usage: scripts/fuzz.sh [seconds per target=30] [target...]  (default: all targets; 8 x 30 s = 4 min).
# Exits non-zero when a fuzzer finds a crash, a sanitizer report, an unexpected exception, a timeout
# (> 10 s for one input) or an out-of-memory (> 2 GiB); the reproducer is written to
# build-fuzz/fuzz-artifacts/<target>/. Seeds: fuzz/corpus/<target>/ (read-only); new inputs go to
# build-fuzz/fuzz-corpus/<target>/; dictionaries: fuzz/<target>.dict where there is one.
set -euo pipefail

secs="${1:-30}"
if ! [[ "$secs" =~ ^[0-9]+$ ]] || [ "$secs" -lt 1 ]; then
  echo "usage: $0 [seconds-per-target>=1] [target...]" >&2
  exit 2
fi
shift || true

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="$root/build-fuzz"
all_targets=(safetensors_header_fuzz zip_archive_fuzz unpickler_fuzz config_fuzz openai_request_fuzz
             token_shard_fuzz tokenizer_model_fuzz chat_template_fuzz)
targets=("$@")
if [ "$#" -eq 0 ]; then targets=("${all_targets[@]}"); fi

generator=()
if command -v ninja >/dev/null 2>&1; then generator=(-G Ninja); fi
# A build dir configured with another compiler cannot be switched: start it afresh.
if [ -f "$build/CMakeCache.txt" ] && ! grep -q '^CMAKE_CXX_COMPILER:[A-Z]*=.*clang++' "$build/CMakeCache.txt"; then
  rm -rf "$build"
fi
CC=clang CXX=clang++ cmake -S "$root" -B "$build" "${generator[@]}" \
  -DCMAKE_CXX_COMPILER=clang++ -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DMOEPP_FUZZ=ON -DMOEPP_TESTS=OFF -DMOEPP_NATIVE=OFF >/dev/null
cmake --build "$build" --target "${targets[@]}"

export ASAN_OPTIONS="${ASAN_OPTIONS:-abort_on_error=1:detect_leaks=1}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1}"

failed=()
for target in "${targets[@]}"; do
  work="$build/fuzz-corpus/$target"
  artifacts="$build/fuzz-artifacts/$target"
  mkdir -p "$work" "$artifacts"
  dict=()
  if [ -f "$root/fuzz/$target.dict" ]; then dict=(-dict="$root/fuzz/$target.dict"); fi
  echo "== fuzz $target (${secs}s)"
  set +e
  "$build/fuzz/$target" \
    -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -max_len=8192 \
    "${dict[@]}" -artifact_prefix="$artifacts/" -print_final_stats=1 \
    "$work" "$root/fuzz/corpus/$target" 2>"$build/fuzz-$target.log"
  rc=$?
  set -e
  grep -E '^stat::number_of_executed_units|^stat::new_units_added|^#[0-9]+ *DONE' "$build/fuzz-$target.log" || true
  if [ "$rc" -ne 0 ]; then
    tail -n 40 "$build/fuzz-$target.log" >&2
    echo "fuzz: $target: FINDING (exit code $rc); reproducer in $artifacts/, log in $build/fuzz-$target.log" >&2
    failed+=("$target")
  fi
done
if [ "${#failed[@]}" -ne 0 ]; then
  echo "fuzz: findings in: ${failed[*]}" >&2
  exit 1
fi
echo "fuzz: no findings (${#targets[@]} targets, ${secs}s each)"
