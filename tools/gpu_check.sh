#!/usr/bin/env bash
# The GPU check of issue 13 in one go, meant to finish in under 8 minutes on the lent GPU machine:
#
#   0. onnxruntime-gpu: assembled from /tmp/ortgpu/part-* into /tmp/ortsite where the chunks were
#      carried there and it is not installed yet (../shared/gpu/README.md); wheels carried in
#      .whl/ (onnx-graphsurgeon: the device image lacks it) are installed into /tmp/site;
#   1. preflight: fails fast, with one line, when torch sees no CUDA device, a package is missing,
#      or ONNX Runtime's CUDA EP is absent or a session on it falls back to the CPU;
#   2. exports a ResNet-50 (tools/resnet50.py) at 224x224;
#   3. onnxprune compress --device cuda (data-free, few iterations), timed, peak RSS;
#   4. onnxprune bench --provider cuda (I/O binding) at batch 1/8/64, original vs pruned;
#   5. one gate-training step, onnxprune's executor vs native PyTorch, on CUDA;
#   and writes benchmarks/*_cuda.json to $OUT (on the device machine) or the repo's benchmarks/.
#
# GPU_CHECK_DRY=1 runs the same steps on the CPU (CPU provider, a tiny ResNet at 32x32, two
# iterations) and writes *_dry.json, so that the script is tested without a GPU
# (tests/test_gpu_check.py). GPU_CHECK_DEST overrides where the JSON goes; GPU_CHECK_SECONDS the
# time limit of all steps together (default 470); PYTHON the interpreter (default python3).
#
# On the device machine, from the repo root, after the chunk calls of ../shared/gpu/README.md:
#   bash tools/gpu_check.sh            (run with carry [".ortgpu/WHEEL", ".ortgpu/SHA256", ".whl"])
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
START=$(date +%s)
LIMIT="${GPU_CHECK_SECONDS:-470}"
PY="${PYTHON:-python3}"
if [ "${GPU_CHECK_DRY:-0}" = 1 ]; then
    DEVICE=cpu; TAG=dry; TINY=(--tiny); ITERATIONS=2; CALIBRATION=16; BATCHES=1,2
    BENCH_RUNS=(--warmup 1 --iterations 3); STEP=(--batch 2 --steps 2 --warmup 1)
else
    DEVICE=cuda; TAG=cuda; TINY=(); ITERATIONS=30; CALIBRATION=256; BATCHES=1,8,64
    BENCH_RUNS=(--warmup 10 --iterations 50); STEP=(--batch 64 --steps 10 --warmup 3)
fi
DEST="${GPU_CHECK_DEST:-${OUT:-$ROOT/benchmarks}}"
mkdir -p "$DEST"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/gpu_check.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT

fail() { echo "gpu_check: $*" >&2; exit 2; }
left() { echo $(( LIMIT - ($(date +%s) - START) )); }
run_step() {  # run_step NAME COMMAND... : within the time left, failing the script on an error
    local name="$1" seconds rc=0
    shift
    seconds="$(left)"
    [ "$seconds" -gt 5 ] || { echo "gpu_check: out of time before '$name'" >&2; exit 1; }
    echo "== gpu_check: $name (${seconds} s left)" >&2
    timeout "$seconds" "$@" || rc=$?
    if [ "$rc" -ne 0 ]; then
        [ "$rc" -eq 124 ] && echo "gpu_check: '$name' ran out of time" >&2
        echo "gpu_check: '$name' failed (exit $rc)" >&2
        exit "$rc"
    fi
}

# 0. packages
SITE=""
if [ "$DEVICE" = cuda ] && [ ! -d /tmp/ortsite/onnxruntime ] && [ -f .ortgpu/WHEEL ] \
        && compgen -G "/tmp/ortgpu/part-*" >/dev/null; then
    WHEEL="$(cat .ortgpu/WHEEL)"
    (cd /tmp/ortgpu && cat part-* >"$WHEEL" && sha256sum -c "$ROOT/.ortgpu/SHA256" >&2 \
        && "$PY" -m pip install -q --no-deps --no-index --target /tmp/ortsite "$WHEEL") \
        || fail "could not assemble onnxruntime-gpu from /tmp/ortgpu (see ../shared/gpu/README.md)"
fi
if [ "$DEVICE" = cuda ] && compgen -G ".whl/*.whl" >/dev/null; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl || fail "could not install the wheels in .whl/"
    SITE=/tmp/site
fi
export PYTHONPATH="$ROOT${SITE:+:$SITE}:/tmp/ortsite${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1

# 1. preflight (fails fast: exit 2 and one line)
run_step "preflight" "$PY" tools/gpu_check.py preflight --device "$DEVICE" \
    --json "$DEST/gpu_preflight_$TAG.json"

# 2. the model
run_step "export" "$PY" tools/gpu_check.py export "$WORK/model.onnx" "${TINY[@]}"

# 3. compress on the device (data-free: synthetic inputs, no data to carry)
run_step "compress --device $DEVICE" "$PY" tools/gpu_check.py timed \
    --json "$WORK/compress_run.json" --log "$WORK/compress.log" -- \
    "$PY" -m onnxprune compress "$WORK/model.onnx" -o "$WORK/pruned.onnx" \
    --report "$WORK/report.json" --device "$DEVICE" --provider "$DEVICE" \
    --iterations "$ITERATIONS" --calibration-samples "$CALIBRATION" --target 0.5

# 4. ONNX Runtime latency, original vs pruned (I/O binding on CUDA)
run_step "bench --provider $DEVICE" bash -c '"$0" -m onnxprune bench "$1" "$2" --provider "$3" \
    --batch "$4" --json "${@:6}" >"$5"' "$PY" "$WORK/model.onnx" "$WORK/pruned.onnx" "$DEVICE" \
    "$BATCHES" "$WORK/bench.json" "${BENCH_RUNS[@]}"
cp "$WORK/bench.json" "$DEST/bench_resnet50_$TAG.json"

# 5. gate-training step: executor vs native PyTorch
run_step "gate-training step" "$PY" tools/gpu_check.py step --device "$DEVICE" "${TINY[@]}" \
    "${STEP[@]}" --onnx "$WORK/model.onnx" --json "$DEST/gate_step_$TAG.json"

"$PY" tools/gpu_check.py summary --compress "$WORK/compress_run.json" \
    --report "$WORK/report.json" --bench "$WORK/bench.json" \
    --json "$DEST/compress_resnet50_$TAG.json" >/dev/null
[ -n "${OUT:-}" ] && cp "$WORK/compress.log" "$OUT/gpu_check_compress_$TAG.log"
echo "gpu_check: done in $(( $(date +%s) - START )) s; JSON in $DEST:" \
    "gpu_preflight_$TAG.json compress_resnet50_$TAG.json bench_resnet50_$TAG.json" \
    "gate_step_$TAG.json" >&2
