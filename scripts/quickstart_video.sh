#!/usr/bin/env bash
# Video quickstart: sets up the environment, trains the video quickstart model from
# scratch on the built-in synthetic videos, evaluates video AP on their validation split,
# prints the metrics and draws the tracked instances of a validation clip into a video.
# Extra arguments are config overrides, e.g. `bash scripts/quickstart_video.sh SOLVER.MAX_ITER 200`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
source scripts/venv_path.sh
PY=$VENV/bin/python
CONFIG=configs/quickstart/video_R18_synthetic.yaml
OUT=${QUICKSTART_OUTPUT:-output/quickstart_video}
start=$(date +%s)
"$PY" train_net_video.py --config-file "$CONFIG" OUTPUT_DIR "$OUT" "$@"
trained=$(date +%s)
echo
echo "Final metrics (data generation, training and evaluation took $(( trained - start )) s):"
grep -A3 "Final evaluation" "$OUT/log.txt" | tail -n 2

VAL_DIR=$("$PY" -c "from mask2former.video.data.synthetic_videos import ensure_synthetic_videos as e; print(e('val'))")
"$PY" demo/demo_video.py --config-file "$CONFIG" --input "$VAL_DIR/JPEGImages/00001/*.jpg" \
  --output "$OUT/val_clip_00001.mp4" --scale 3 --save-json --opts "$@" MODEL.WEIGHTS "$OUT/model_final.pth"
echo "Tracked instances of validation clip 00001 drawn into $OUT/val_clip_00001.mp4 (+ .json)"
echo "Whole quickstart: $(( $(date +%s) - start )) s"
