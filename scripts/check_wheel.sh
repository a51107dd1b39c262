#!/usr/bin/env bash
# Builds the mask2former wheel (with its compiled op) and checks it in a fresh virtualenv:
# `import mask2former` registers everything, the op is the compiled one, and the quickstart
# model runs a forward pass. The fresh virtualenv gets torch, detectron2 and the rest of the
# stack from the project's virtualenv (a .pth line, so nothing is reinstalled) but not its
# editable mask2former: the package imported there is the one from the wheel.
# Usage: bash scripts/check_wheel.sh   (after scripts/setup_env.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
source scripts/venv_path.sh
PY="$VENV/bin/python"
[ -x "$PY" ] || { echo "no virtualenv at $VENV: run scripts/setup_env.sh first"; exit 1; }

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
start=$(date +%s)
"$PY" -m pip wheel -q . --no-deps --no-build-isolation -w "$WORK/dist"
WHEEL=$(ls "$WORK"/dist/mask2former-*.whl)
echo "built $(basename "$WHEEL") in $(( $(date +%s) - start )) s"
# (listed to a file first: under pipefail, grep -q closing the pipe early would fail the check)
"$PY" -m zipfile -l "$WHEEL" >"$WORK/wheel-contents.txt"
grep -q 'mask2former/_C.*\.so' "$WORK/wheel-contents.txt" || { echo "FAILED: the wheel has no compiled op"; exit 1; }

"$PY" -m venv "$WORK/venv"
SITE=$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
FRESH_SITE=$("$WORK/venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
echo "$SITE" >"$FRESH_SITE/project-stack.pth"
"$WORK/venv/bin/python" -m pip install -q --no-deps "$WHEEL"

cd "$WORK"  # away from the checkout, so only the installed package can be imported
env -u PYTHONPATH "$WORK/venv/bin/python" - "$ROOT/configs/quickstart/panoptic_R18_synthetic.yaml" <<'EOF'
import sys

import torch
from detectron2.modeling import build_model

import mask2former
from mask2former.config import build_config
from mask2former.ops import _extension

assert "/venv/" in mask2former.__file__, f"mask2former imported from {mask2former.__file__}, not the wheel"
assert _extension.is_available(), f"compiled op not loaded: {_extension.load_error()!r}"
cfg = build_config(sys.argv[1], ["MODEL.DEVICE", "cpu"])
model = build_model(cfg).eval()
with torch.no_grad():
    (out,) = model([{"image": torch.randint(0, 255, (3, 96, 128), dtype=torch.uint8), "height": 96, "width": 128}])
panoptic, segments = out["panoptic_seg"]
assert panoptic.shape == (96, 128) and out["sem_seg"].shape[1:] == (96, 128), out.keys()
print(f"ok: the wheel's mask2former ({mask2former.__file__}) runs the quickstart model "
      f"(compiled op, {len(segments)} segments, sem_seg {tuple(out['sem_seg'].shape)})")
EOF
echo "wheel check took $(( $(date +%s) - start )) s"
