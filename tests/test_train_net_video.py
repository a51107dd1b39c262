"""train_net_video.py on the tiny video quickstart config and the built-in synthetic
videos: training with the end-of-training video AP, --eval-only, and --resume replaying
the uninterrupted run."""
import json
import math
import os
import shutil
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
TEST_CONFIG = REPO / "configs" / "quickstart" / "video_R18_synthetic_test.yaml"
# 3 iterations with a checkpoint after the second; no evaluation during training
TRAIN_OPTS = ("SOLVER.MAX_ITER", "3", "SOLVER.CHECKPOINT_PERIOD", "2", "SEED", "5")


@pytest.fixture(scope="module")
def train_net_video():
    sys.path.insert(0, str(REPO))
    try:
        import train_net_video as module
    finally:
        sys.path.remove(str(REPO))
    return module


def _args(output_dir, *opts, resume=False, eval_only=False):
    from detectron2.engine import default_argument_parser

    argv = ["--config-file", str(TEST_CONFIG)] + ["--resume"] * resume + ["--eval-only"] * eval_only
    return default_argument_parser().parse_args(argv + ["OUTPUT_DIR", str(output_dir), *opts])


def _weights(path):
    return torch.load(path, map_location="cpu", weights_only=False)["model"]


def test_train_evaluate_and_resume(tmp_path, train_net_video):
    straight = tmp_path / "straight"
    results = train_net_video.main(_args(straight, *TRAIN_OPTS))
    ap = results["segm"]["AP"]
    assert math.isfinite(ap) and 0.0 <= ap <= 100.0
    assert {"AP50", "AP75", "AR1", "AR10"} <= set(results["segm"])
    for name in ("model_0000001.pth", "model_final.pth", "last_checkpoint", "metrics.json", "log.txt"):
        assert (straight / name).is_file(), name
    assert "loss_dice" in (straight / "metrics.json").read_text()
    # the official results format: one entry per (video, kept query), masks for every frame
    predictions = json.loads((straight / "inference" / "results.json").read_text())
    assert predictions and {"video_id", "category_id", "score", "segmentations"} <= set(predictions[0])
    assert {len(p["segmentations"]) for p in predictions} == {6}  # mini_val clips have 6 frames

    final = straight / "model_final.pth"
    again = train_net_video.main(_args(straight, "MODEL.WEIGHTS", str(final), eval_only=True))
    assert again["segm"]["AP"] == pytest.approx(ap, abs=1e-6)

    # Resume from the checkpoint taken after iteration 2: the third iteration replays the
    # same batch and random draws, so the final weights equal the uninterrupted run's.
    resumed = tmp_path / "resumed"
    resumed.mkdir()
    shutil.copy(straight / "model_0000001.pth", resumed)
    (resumed / "last_checkpoint").write_text("model_0000001.pth")
    train_net_video.main(_args(resumed, *TRAIN_OPTS, "DATASETS.TEST", "()", resume=True))
    a, b = _weights(final), _weights(resumed / "model_final.pth")
    assert a.keys() == b.keys()
    for key in a:
        assert torch.allclose(a[key].float(), b[key].float(), atol=1e-5, rtol=1e-4), key
    first = _weights(straight / "model_0000001.pth")
    assert any(not torch.equal(first[k], a[k]) for k in a), "the last iteration changed the weights"


def test_two_processes_on_cpu(tmp_path):
    import subprocess

    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [sys.executable, str(REPO / "train_net_video.py"), "--num-gpus", "2", "--dist-url", "auto",
           "--config-file", str(TEST_CONFIG), "OUTPUT_DIR", str(tmp_path),
           "SOLVER.MAX_ITER", "2", "MODEL.DEVICE", "cpu"]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    log = (tmp_path / "log.txt").read_text()
    assert "World size: 2" in log
    # each process evaluates one of the two mini_val clips; rank 0 gathers and reports
    assert "Final evaluation" in log and "AP=" in log
    assert len(json.loads((tmp_path / "inference" / "results.json").read_text())) == 2 * 10
    assert (tmp_path / "model_final.pth").is_file()
