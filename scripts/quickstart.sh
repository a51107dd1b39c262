#!/usr/bin/env bash
# Sets up the environment, trains the quickstart model on the built-in synthetic shapes
# data, evaluates it (PQ, AP, mIoU), prints the metrics table and draws the predictions on
# a few validation images.
# Extra arguments are config overrides, e.g. `bash scripts/quickstart.sh SOLVER.MAX_ITER 200`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
source scripts/venv_path.sh
PY=$VENV/bin/python
CONFIG=configs/quickstart/panoptic_R18_synthetic.yaml
OUT=${QUICKSTART_OUTPUT:-output/quickstart}
start=$(date +%s)
$PY train_net.py --config-file "$CONFIG" OUTPUT_DIR "$OUT" "$@"
echo
echo "Final metrics (training and evaluation took $(( $(date +%s) - start )) s):"
grep -A6 "Final evaluation" "$OUT/log.txt" | tail -n 6

VAL_DIR=$($PY -c "from mask2former.data.datasets.synthetic_shapes import ensure_synthetic_shapes as e; print(e('val'))")
$PY demo/demo.py --config-file "$CONFIG" --input "$VAL_DIR/images/00000[0-7].jpg" \
  --output "$OUT/visualizations" --save-json --opts "$@" MODEL.WEIGHTS "$OUT/model_final.pth"
echo "Predictions drawn on 8 validation images: $OUT/visualizations/*.png"
echo "Checkpoints, metrics.json, tensorboard events and evaluation outputs are in $OUT"
