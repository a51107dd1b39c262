#!/usr/bin/env bash
# Compile-only check of the CUDA build of the multi-scale deformable attention op
# (mask2former._C with its CUDA kernels), for machines without a GPU. Builds into a temporary
# folder, never into the source tree, for one GPU architecture (TORCH_CUDA_ARCH_LIST, default
# 8.0). Exits 0 with "skipped: <reason>" when nvcc or torch is missing, non-zero on a compile
# error. Usage: bash scripts/compile_cuda_op.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
[ -x "$PY" ] || PY=python3

export CUDA_HOME=${CUDA_HOME:-/usr/local/cuda}
NVCC="$CUDA_HOME/bin/nvcc"
if [ ! -x "$NVCC" ]; then
  if command -v nvcc >/dev/null 2>&1; then
    NVCC=$(command -v nvcc)
    CUDA_HOME=$(dirname "$(dirname "$NVCC")")
  else
    echo "skipped: nvcc not found (set CUDA_HOME or put nvcc on PATH)"
    exit 0
  fi
fi
if ! "$PY" -c "import torch" 2>/dev/null; then
  echo "skipped: torch is not importable with $PY"
  exit 0
fi
# ATen's CUDA headers include cuSPARSE/cuBLAS headers that a bare CUDA toolkit may lack; the
# nvidia-* wheels that torch depends on ship them.
WHEEL_INCLUDE=$("$PY" - <<'PYEOF'
import glob, os, site
dirs = [d for p in site.getsitepackages() for d in glob.glob(os.path.join(p, "nvidia", "cu*", "include"))]
print(":".join(sorted(dirs)))
PYEOF
)
export CPATH="${WHEEL_INCLUDE}${CPATH:+:$CPATH}"
# torch's architecture detection needs a GPU unless the list is given.
export TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-8.0}
export FORCE_CUDA=1

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
echo "compiling the CUDA op with $("$NVCC" --version | tail -n1) for arch $TORCH_CUDA_ARCH_LIST into $WORK"
START=$(date +%s)
if ! "$PY" setup.py -q build_ext --build-temp "$WORK/temp" --build-lib "$WORK/lib" >"$WORK/log.txt" 2>&1; then
  tail -n 60 "$WORK/log.txt"
  echo "FAILED: the CUDA build of mask2former._C does not compile ($(($(date +%s) - START)) s)"
  exit 1
fi
if ! ls "$WORK"/lib/mask2former/_C*.so >/dev/null 2>&1; then
  tail -n 30 "$WORK/log.txt"
  echo "FAILED: the build produced no mask2former/_C*.so"
  exit 1
fi
# the CUDA kernels' host stubs must be in the library (names only used by csrc/cuda/)
if ! grep -aq "backward_kernel" "$WORK"/lib/mask2former/_C*.so; then
  echo "FAILED: the built library contains no CUDA kernels"
  exit 1
fi
echo "ok: the CUDA build of mask2former._C compiles ($(($(date +%s) - START)) s)"
