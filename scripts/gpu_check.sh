#!/usr/bin/env bash
# GPU readiness check, for a machine with a CUDA GPU (about 8 minutes in all): builds the
# deformable-attention op with CUDA, runs the CUDA tests (kernel against the CPU kernel in
# four dtypes, gradcheck in float64, the layer under float16 autocast), trains the quickstart
# model for 50 iterations with AMP on the GPU, runs bench_inference.py --device cuda, and
# prints one summary table. Exits 1 with a one-line reason where there is no usable GPU.
# Usage: bash scripts/gpu_check.sh   (PYTHON=... to choose the interpreter)
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
OUT=${GPU_CHECK_OUTPUT:-output/gpu_check}
mkdir -p "$OUT"

if ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
  echo "gpu_check: no CUDA GPU visible to torch ($PY); nothing to check on this machine" >&2
  exit 1
fi
if ! command -v nvcc >/dev/null 2>&1 && [ ! -x "${CUDA_HOME:-/usr/local/cuda}/bin/nvcc" ]; then
  echo "gpu_check: a GPU is visible but nvcc is not (set CUDA_HOME); the CUDA op cannot be built" >&2
  exit 1
fi

declare -a NAMES RESULTS SECONDS_TAKEN
step() {  # step NAME LOGFILE COMMAND...: runs one step, records pass/fail and its time
  local name=$1 log=$2
  shift 2
  local start=$(date +%s)
  echo "== $name (log: $log)"
  if "$@" >"$log" 2>&1; then RESULTS+=("ok"); else RESULTS+=("FAILED (exit $?)"); tail -n 20 "$log"; fi
  NAMES+=("$name")
  SECONDS_TAKEN+=($(( $(date +%s) - start )))
}

step "build the op with CUDA" "$OUT/build.log" env FORCE_CUDA=1 "$PY" setup.py build_ext --inplace
step "CUDA tests" "$OUT/tests.log" "$PY" -m pytest -q -rs tests/test_ms_deform_attn.py -k cuda
step "quickstart, 50 iterations, AMP on GPU" "$OUT/train.log" "$PY" train_net.py \
  --config-file configs/quickstart/panoptic_R18_synthetic.yaml MODEL.DEVICE cuda SOLVER.AMP.ENABLED True \
  SOLVER.MAX_ITER 50 TEST.EVAL_PERIOD 0 OUTPUT_DIR "$OUT/train"
step "bench_inference.py --device cuda" "$OUT/bench.log" "$PY" benchmarks/bench_inference.py --device cuda \
  --repeats 3 --rounds 1

echo
"$PY" -c "import torch; print('GPU:', torch.cuda.get_device_name(0), '| torch', torch.__version__, '| CUDA', torch.version.cuda)"
printf '%-42s %-18s %8s\n' step result seconds
failed=0
for i in "${!NAMES[@]}"; do
  printf '%-42s %-18s %8s\n' "${NAMES[$i]}" "${RESULTS[$i]}" "${SECONDS_TAKEN[$i]}"
  [ "${RESULTS[$i]}" = ok ] || failed=1
done
grep -E "passed|failed|skipped" "$OUT/tests.log" | tail -n 1
grep -A8 "^this checkout" "$OUT/bench.log" || true
exit $failed
