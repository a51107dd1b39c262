#!/usr/bin/env bash
# Creates (or updates) the project's virtualenv with a pinned stack (in .venv, or the one
# scripts/venv_path.sh names for PYTHON / MASK2FORMER_VENV),
# detectron2 0.6 from the PyPI sdist `pb1-detectron2` (Python code only) and
# this package installed in editable mode. Safe to re-run: finished steps are skipped.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
source scripts/venv_path.sh
STAMP_DIR=$VENV/.setup-stamps
mkdir -p "$(dirname "$VENV")"

log() { printf '[setup_env] %s\n' "$*"; }
done_step() { [ -f "$STAMP_DIR/$1" ] && [ "$(cat "$STAMP_DIR/$1")" = "$2" ]; }
mark_step() { mkdir -p "$STAMP_DIR"; echo "$2" >"$STAMP_DIR/$1"; }

if [ ! -x "$VENV/bin/python" ]; then
  log "creating virtualenv $VENV with $("$PY" -V)"
  "$PY" -m venv "$VENV"
elif [ -n "${PYTHON:-}" ] && [ "$("$VENV/bin/python" -V)" != "$("$PY" -V)" ]; then
  echo "$VENV has $("$VENV/bin/python" -V), not $("$PY" -V) (PYTHON=$PYTHON): remove it or set MASK2FORMER_VENV" >&2
  exit 1
fi
PIP="$VENV/bin/python -m pip"
export PIP_DISABLE_PIP_VERSION_CHECK=1

# 1. The pinned stack. pip 24 is the newest that still builds the detectron2 sdist.
REQ_HASH=$(sha1sum requirements.txt | cut -c1-12)
if ! done_step requirements "$REQ_HASH"; then
  log "installing pinned requirements (first run takes a few minutes)"
  $PIP install -q "pip>=23,<25"
  $PIP install -q -r requirements.txt
  # panopticapi-lite declares numpy<2 and scikit-image, but the part used here (its PQ
  # evaluation) needs only numpy and PIL, and runs on numpy 2.
  $PIP install -q --no-deps panopticapi-lite==0.2.0
  mark_step requirements "$REQ_HASH"
fi

# 1b. Optional deploy extra (ONNX export), when the project has one.
if [ -f requirements-deploy.txt ]; then
  DEPLOY_HASH=$(sha1sum requirements-deploy.txt | cut -c1-12)
  if ! done_step deploy "$DEPLOY_HASH"; then
    log "installing the deploy extra (requirements-deploy.txt)"
    $PIP install -q -r requirements-deploy.txt
    mark_step deploy "$DEPLOY_HASH"
  fi
fi

# 2. detectron2: use a real one if it is already importable, else build the sdist's Python part.
# The sdist build is redone when the patch changed (a virtualenv made before a newer numpy/Pillow
# would otherwise keep a detectron2 with their removed names).
PATCH_HASH=$(sha1sum scripts/patch_detectron2_sdist.py | cut -c1-12)
FROM_SDIST=$("$VENV/bin/python" -c "import importlib.metadata as m; m.distribution('pb1-detectron2'); print(1)" 2>/dev/null || true)
if "$VENV/bin/python" -c "import detectron2" 2>/dev/null && { [ -z "$FROM_SDIST" ] || done_step detectron2 "$PATCH_HASH"; }; then
  log "detectron2 already importable: $("$VENV/bin/python" -c 'import detectron2,os;print(os.path.dirname(detectron2.__file__))')"
else
  log "installing detectron2 0.6 (Python code from the pb1-detectron2 sdist, no C++ ops)"
  WORK=$(mktemp -d)
  trap 'rm -rf "$WORK"' EXIT
  $PIP download -q --no-deps --no-binary :all: --no-build-isolation -d "$WORK" pb1-detectron2==0.6
  tar -xzf "$WORK"/pb1-detectron2-0.6.tar.gz -C "$WORK"
  SRC=$(find "$WORK" -maxdepth 1 -type d -name 'pb1*detectron2*' | head -n1)
  "$VENV/bin/python" scripts/patch_detectron2_sdist.py "$SRC"
  $PIP install -q --no-deps --no-build-isolation "$SRC"
  mark_step detectron2 "$PATCH_HASH"
fi
"$VENV/bin/python" scripts/install_detectron2_placeholder_ops.py

# 3. This package, editable, with its C++ op (CUDA too when a GPU or FORCE_CUDA=1 is there).
SRC_HASH=$(cat setup.py $(find mask2former -name '*.cpp' -o -name '*.cu' -o -name '*.h' | sort) 2>/dev/null | sha1sum | cut -c1-12)
if ! done_step package "$SRC_HASH" || ! "$VENV/bin/python" -c "import mask2former" 2>/dev/null; then
  log "installing mask2former (editable, builds the C++ op)"
  $PIP install -q --no-deps --no-build-isolation -e .
  mark_step package "$SRC_HASH"
fi
log "ready: $("$VENV/bin/python" -c 'import torch,detectron2;print("torch",torch.__version__,"detectron2",detectron2.__version__)')"
