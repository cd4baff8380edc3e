#!/usr/bin/env bash
# The GPU session's one script (docs/gpu.md): on a machine with an NVIDIA GPU, nvcc, CMake, ninja and
# PyTorch (no Debian -dev packages), builds the GPU-only tree (-DMOEPP_GPU_ONLY=ON) against the
# dependencies that scripts/gpu_deps.sh unpacked into .gpudeps/ (carry it), then runs
#   1. the GPU tests (ctest -L gpu: GoogleTest incl. the dispatch/balance/GEMM checks, and the PyTorch
#      parity of moepp_gpu_layer, tests/python/gpu_layer_parity.py),
#   2. the benchmark (bench/gpu/gpu_bench_main.cpp): cuBLAS's dense BF16 rate; the 7B layer's expert
#      forward at 16k tokens, MoE++ vs MoE at FFN-slot fractions 1.0/0.85/0.7/0.5, and the expert GEMMs'
#      TFLOP/s against one dense GEMM of the same FLOPs, for both expert-GEMM modes; the layer's forward
#      and forward + backward at 2k/4k/16k tokens; and the released-code eager PyTorch layer
#      (bench/torch_layer_eager.py --device cuda --dtype bf16) at the same sizes and fraction,
#   3. the training step (bench/gpu/gpu_train_main.cpp, GpuTrainer): tokens/s and MFU of the ~107M MoE++
#      of configs/gpu-train-100m.json (16 x 1024 tokens a step), BF16 then F32, against the H200's
#      datasheet dense BF16 peak and the dense cuBLAS rate measured in step 2,
# writing into $OUT (default out/gpu_check): results.jsonl (one JSON object a line: env, build, tests,
# parity, every measurement, with the commit and the GPU), summary.json (the ratios the issue asks for),
# and the logs build.log, tests.log, bench.log. Every step has its own time limit, cut to what is left of
# BUDGET seconds (default 540, the build included) so that the script ends inside a 600 s device call; a
# failing or cut step is recorded (ok false, timed_out) and the next one still runs. The layer's
# benchmarks run first but leave TRAIN_RESERVE seconds (default 70) of the budget to the training step.
# Usage (device run, repo root): MOEPP_COMMIT=<sha> bash scripts/gpu_check.sh   (carry .gpudeps)
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/out/gpu_check}
mkdir -p "$OUT"
RES=$OUT/results.jsonl
: > "$RES"
COMMIT=${MOEPP_COMMIT:-$(git rev-parse HEAD 2>/dev/null || echo unknown)}
PY=${PY:-$(command -v python3)}  # the Python with torch (the GPU image's python3)
BUILD=${BUILD:-build-gpu}
JOBS=${JOBS:-16}
DEPS=$PWD/.gpudeps/root/usr
start=$(date +%s)

line() {  # line KEY=VALUE ... -> one JSON object into results.jsonl (values are JSON already)
  "$PY" - "$COMMIT" "$@" >> "$RES" <<'PYEOF'
import json, sys
rec = {"commit": sys.argv[1]}
for kv in sys.argv[2:]:
    k, v = kv.split("=", 1)
    try:
        rec[k] = json.loads(v)
    except ValueError:
        rec[k] = v
print(json.dumps(rec))
PYEOF
}
elapsed() { echo $(( $(date +%s) - start )); }
BUDGET=${BUDGET:-540}
RESERVE=0  # seconds of BUDGET that lim keeps back for later steps
TRAIN_RESERVE=${TRAIN_RESERVE:-70}
lim() {  # lim SECONDS -> min(SECONDS, what is left of BUDGET - RESERVE), at least 1
  local left=$(( BUDGET - RESERVE - $(elapsed) ))
  [ "$left" -lt 1 ] && left=1
  [ "$1" -lt "$left" ] && echo "$1" || echo "$left"
}

# --- environment ---
gpu=$(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null | head -1)
nvccv=$(nvcc --version 2>/dev/null | tail -1)
torchv=$("$PY" -c 'import torch; print(torch.__version__, torch.version.cuda, torch.cuda.is_available())' 2>&1)
line step='"env"' gpu="\"$gpu\"" nvcc="\"$nvccv\"" torch="\"$torchv\""
if [ ! -f .gpudeps/ok ]; then
  line step='"deps"' ok=false note='"missing .gpudeps: run scripts/gpu_deps.sh here and carry .gpudeps"'
  echo "gpu_check: missing .gpudeps (run scripts/gpu_deps.sh on a machine with apt and carry it)"; exit 2
fi

# --- build (GPU-only tree) ---
t0=$(date +%s)
timeout $(lim 120) cmake -S . -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release -DMOEPP_GPU_ONLY=ON \
  -DCMAKE_CUDA_ARCHITECTURES=${CUDA_ARCH:-90} -DCMAKE_PREFIX_PATH="$DEPS" \
  -DMOEPP_GTEST_SOURCE="$DEPS/src/googletest" -DMOEPP_PYTHON="$PY" > "$OUT/build.log" 2>&1 &&
timeout $(lim 300) ninja -C "$BUILD" -j"$JOBS" moepp_gpu_tests moepp_gpu_layer moepp_gpu_bench moepp_gpu_train >> "$OUT/build.log" 2>&1
rc=$?
line step='"build"' ok=$([ $rc -eq 0 ] && echo true || echo false) seconds=$(( $(date +%s) - t0 ))
if [ $rc -ne 0 ]; then tail -40 "$OUT/build.log"; echo "gpu_check: build failed"; exit 1; fi

# --- tests: GoogleTest (label gpu) and the PyTorch parity ---
t0=$(date +%s)
(cd "$BUILD" && timeout $(lim 90) ctest -L gpu -E gpu_layer_parity --output-on-failure) > "$OUT/tests.log" 2>&1
rc=$?
summary=$(grep -E "tests passed|tests failed" "$OUT/tests.log" | tail -1)
line step='"gtest"' ok=$([ $rc -eq 0 ] && echo true || echo false) seconds=$(( $(date +%s) - t0 )) summary="\"$summary\""
t0=$(date +%s)
PYTHONUNBUFFERED=1 timeout $(lim 150) "$PY" tests/python/gpu_layer_parity.py --driver "$BUILD/moepp_gpu_layer" >> "$OUT/tests.log" 2>&1
rc=$?
summary=$(grep -E "^[0-9]+ passed, [0-9]+ failed" "$OUT/tests.log" | tail -1)
line step='"parity"' ok=$([ $rc -eq 0 ] && echo true || echo false) seconds=$(( $(date +%s) - t0 )) summary="\"$summary\"" \
  timed_out=$([ $rc -eq 124 ] && echo true || echo false) \
  skipped_no_gpu=$(grep -q "no GPU: skipped" "$OUT/tests.log" && echo true || echo false)

# --- benchmarks of the layer (leaving TRAIN_RESERVE seconds for the training step) ---
RESERVE=$TRAIN_RESERVE
B="$BUILD/moepp_gpu_bench"
bench() {  # bench SECONDS ARGS...: the driver's JSON lines into results.jsonl; a failure is recorded too
  timeout $(lim "$1") "$B" --commit "$COMMIT" "${@:2}" 2>> "$OUT/bench.log" | tee -a "$OUT/bench.log" >> "$RES"
  local rc=${PIPESTATUS[0]}
  [ "$rc" -eq 0 ] || line step='"bench"' ok=false rc=$rc args="\"${*:2}\""
}
bench 30 --mode dense --dense-n 8192
dense=$("$PY" -c 'import json,sys; print(max([json.loads(l)["tflops"] for l in open(sys.argv[1]) if "\"dense_gemm\"" in l] or [0]))' "$RES")
for mode in per-expert grouped; do
  bench 60 --mode experts --gemm $mode --tokens 16384
done
dense_arg=()
"$PY" -c 'import sys; sys.exit(0 if float(sys.argv[1]) > 0 else 1)' "$dense" && dense_arg=(--dense-tflops "$dense")
for mode in per-expert grouped; do
  bench 60 --mode layer --gemm $mode --tokens-list 2048,4096,16384 --fraction 0.85 "${dense_arg[@]}"
done
for T in 2048 4096 16384; do
  PYTHONUNBUFFERED=1 timeout $(lim 40) "$PY" bench/torch_layer_eager.py --device cuda --dtype bf16 --d 1536 --i 4096 \
    --n-ffn 16 --tokens $T --ffn-fraction 0.85 --backward --reps 10 --warmup 2 2>> "$OUT/bench.log" |
    "$PY" -c 'import json,sys
for l in sys.stdin:
    r = json.loads(l); r["bench"] = "torch_eager_fwd_bwd"; r["commit"] = sys.argv[1]; print(json.dumps(r))' "$COMMIT" \
    | tee -a "$OUT/bench.log" >> "$RES"
  rc=${PIPESTATUS[0]}
  [ "$rc" -eq 0 ] || line step='"torch_eager"' ok=false rc=$rc tokens=$T
done

# --- the training step: ~107M MoE++ (configs/gpu-train-100m.json), BF16 then F32 ---
RESERVE=0
dense_train=()
"$PY" -c 'import sys; sys.exit(0 if float(sys.argv[1]) > 0 else 1)' "$dense" && dense_train=(--dense-tflops "$dense")
for prec in bf16 f32; do
  steps=10; [ "$prec" = f32 ] && steps=5
  timeout $(lim 50) "$BUILD/moepp_gpu_train" --config configs/gpu-train-100m.json --precision $prec --steps $steps \
    --warmup 2 --commit "$COMMIT" "${dense_train[@]}" 2>> "$OUT/bench.log" | tee -a "$OUT/bench.log" >> "$RES"
  rc=${PIPESTATUS[0]}
  [ "$rc" -eq 0 ] || line step="\"train_$prec\"" ok=false rc=$rc timed_out=$([ $rc -eq 124 ] && echo true || echo false)
done

# --- summary: the ratios of the issue ---
"$PY" - "$RES" "$OUT/summary.json" <<'PYEOF'
import json, sys
recs = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
by = lambda b: [r for r in recs if r.get("bench") == b]
s = {"commit": recs[0]["commit"] if recs else None}
s["env"] = next((r for r in recs if r.get("step") == "env"), None)
s["steps"] = {r["step"]: {k: r[k] for k in r if k not in ("commit", "step")} for r in recs if "step" in r}
d = by("dense_gemm")
s["dense_bf16_tflops"] = d[0]["tflops"] if d else None
s["expert_forward"] = [{k: r[k] for k in ("gemm", "fraction_target", "ffn_slot_fraction", "moe_ms", "moepp_ms",
                                        "speedup", "ideal", "share_of_ideal")} for r in by("expert_forward")]
s["expert_gemm_rate"] = [{k: r[k] for k in ("gemm", "rows", "expert_tflops", "dense_tflops", "share_of_dense")}
                         for r in by("expert_gemm_rate")]
eager = {r["tokens"]: r for r in by("torch_eager_fwd_bwd")}
rows = []
for r in by("layer_fwd_bwd"):
    e = eager.get(r["tokens"])
    rows.append({"gemm": r["gemm"], "tokens": r["tokens"], "ffn_slot_fraction": r["ffn_slot_fraction"],
                 "fwd_ms": r["fwd_ms"], "fwd_bwd_ms": r["fwd_bwd_ms"], "fwd_bwd_tflops": r["fwd_bwd_tflops"],
                 "share_of_dense": r.get("share_of_dense"),
                 "torch_eager_fwd_bwd_ms": e["fwd_bwd_ms"] if e else None,
                 "torch_eager_ffn_slot_fraction": e["ffn_slot_fraction"] if e else None,
                 "speedup_vs_torch_eager": e["fwd_bwd_ms"] / r["fwd_bwd_ms"] if e else None})
s["layer_fwd_bwd"] = rows
s["train_step"] = [{k: r.get(k) for k in ("model", "params", "precision", "batch", "seq_len", "step_ms", "tokens_per_s",
                                          "ffn_slots_per_token", "model_tflops", "peak_tflops", "mfu_peak",
                                          "dense_tflops", "mfu_dense", "loss_first", "loss_last")}
                   for r in by("train_step")]
json.dump(s, open(sys.argv[2], "w"), indent=1)
print(json.dumps(s, indent=1))
PYEOF
echo "gpu_check: done in $(elapsed) s; results in $OUT"
