#!/usr/bin/env bash
# Sets up the environment, trains the quickstart model on the built-in synthetic shapes
# data, evaluates it (PQ, AP, mIoU) and prints the metrics table.
# Extra arguments are config overrides, e.g. `bash scripts/quickstart.sh SOLVER.MAX_ITER 200`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
OUT=${QUICKSTART_OUTPUT:-output/quickstart}
# One thread per process is far faster than oversubscribed OpenMP on a busy machine.
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
.venv/bin/python train_net.py --config-file configs/quickstart/panoptic_R18_synthetic.yaml \
  OUTPUT_DIR "$OUT" "$@"
echo
echo "Final metrics:"
grep -A6 "Final evaluation" "$OUT/log.txt" | tail -n 6
echo "Checkpoints, metrics.json, tensorboard events and evaluation outputs are in $OUT"
