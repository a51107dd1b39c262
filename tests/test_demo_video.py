"""demo/demo_video.py on a generated video: with a stand-in video model whose instances
are known (frame count, size, ids and colours that stay with their instance, the score
threshold, clear errors), and once through the command line with the real tiny model."""
import json
import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.modeling import META_ARCH_REGISTRY, build_model
from torch import nn

from demo_test_utils import REPO_ROOT, load_script, write_config
from mask2former.config import build_config
from mask2former.video import add_maskformer2_video_config

TEST_CONFIG = REPO_ROOT / "configs" / "quickstart" / "video_R18_synthetic_test.yaml"
NUM_FRAMES, HEIGHT, WIDTH = 8, 48, 64
SQUARE = 12  # side of the moving square, pixels


demo_video = load_script("demo/demo_video.py", "mask2former_demo_video")


def square_x(t):
    return 20 + 3 * t


def make_frames():
    """A white square moving right over a dark grey background (BGR)."""
    frames = []
    for t in range(NUM_FRAMES):
        frame = np.full((HEIGHT, WIDTH, 3), 40, np.uint8)
        frame[10:10 + SQUARE, square_x(t):square_x(t) + SQUARE] = 255
        frames.append(frame)
    return frames


@META_ARCH_REGISTRY.register()
class StandInVideoSegmenter(nn.Module):
    """VideoMaskFormer's eval output with known instances: the bright pixels (class 1,
    score 0.9), the left quarter of every frame (class 0, score 0.7) and a low-scoring
    whole-frame instance (class 2, score 0.2)."""

    def __init__(self, cfg):
        super().__init__()
        self.size_divisibility = 1
        self.anchor = nn.Parameter(torch.zeros(1))  # something for the checkpoint to hold

    def forward(self, batched_inputs):
        (video,) = batched_inputs
        frames = torch.stack(video["image"]).float()  # (T, 3, h, w), resized for the model
        size = (video["height"], video["width"])
        bright = nn.functional.interpolate(frames.mean(1, keepdim=True), size=size)[:, 0] > 128
        left = torch.zeros_like(bright)
        left[:, :, : size[1] // 4] = True
        return {
            "image_size": size,
            "pred_scores": [0.7, 0.9, 0.2],
            "pred_labels": [0, 1, 2],
            "pred_masks": [left, bright, torch.ones_like(bright)],
        }


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("demo_video")
    frames = make_frames()
    writer = cv2.VideoWriter(str(folder / "clip.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), 5.0, (WIDTH, HEIGHT))
    for frame in frames:
        writer.write(frame)
    writer.release()
    (folder / "frames").mkdir()
    for t, frame in enumerate(frames):
        cv2.imwrite(str(folder / "frames" / f"{t:05d}.png"), frame)
    cfg = build_config(TEST_CONFIG, ["MODEL.META_ARCHITECTURE", "StandInVideoSegmenter", "MODEL.DEVICE", "cpu"],
                       extra_configs=[add_maskformer2_video_config])
    write_config(folder / "stand_in.yaml", cfg)
    DetectionCheckpointer(build_model(cfg), save_dir=str(folder)).save("stand_in")
    return folder


def _run(workdir, *args):
    return demo_video.main(["--config-file", str(workdir / "stand_in.yaml"), *map(str, args),
                            "--opts", "MODEL.WEIGHTS", str(workdir / "stand_in.pth")])


def _read_video(path):
    capture = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(frame)
    capture.release()
    return frames


def test_video_input_gives_a_video_with_tracked_ids(workdir):
    out = workdir / "out_video"
    assert _run(workdir, "--video-input", workdir / "clip.mp4", "--output", out, "--save-json") == 0
    frames = _read_video(out / "clip.mp4")
    assert len(frames) == NUM_FRAMES and frames[0].shape == (HEIGHT, WIDTH, 3)
    record = json.loads((out / "clip.json").read_text())
    assert (record["num_frames"], record["height"], record["width"]) == (NUM_FRAMES, HEIGHT, WIDTH)
    instances = record["instances"]
    # best score first, ids 1.. for the whole video; the 0.2 instance is under the threshold
    assert [(i["id"], i["category"], i["score"]) for i in instances] == [
        (1, "rectangle", 0.9), (2, "circle", 0.7)]
    square, left = instances
    assert square["color"] != left["color"]
    for t, frame in enumerate(square["frames"]):
        x0, y0, x1, y1 = frame["bbox"]
        assert abs(x0 - square_x(t)) <= 1 and abs(x1 - square_x(t) - SQUARE) <= 1 and y0 in (9, 10, 11)
    assert all(f["bbox"][:2] == [0, 0] for f in left["frames"])


def test_frames_input_keeps_each_instance_colour(workdir):
    out = workdir / "out_frames"
    files = str(workdir / "frames" / "*.png")
    assert _run(workdir, "--input", files, "--output", out, "--confidence-threshold", "0.5") == 0
    drawn = [cv2.imread(str(out / f"{t:05d}.png")) for t in range(NUM_FRAMES)]
    assert all(d.shape == (HEIGHT, WIDTH, 3) for d in drawn)
    # inside the moving square and inside the left quarter, every frame has the same
    # overlay colour, the two differ, and both differ from the input
    centre = [d[10 + SQUARE // 2, square_x(t) + SQUARE // 2].astype(int) for t, d in enumerate(drawn)]
    left = [d[HEIGHT - 6, 4].astype(int) for d in drawn]
    assert all(np.array_equal(c, centre[0]) for c in centre)
    assert all(np.array_equal(c, left[0]) for c in left)
    assert not np.array_equal(centre[0], left[0])
    assert not np.array_equal(centre[0], [255, 255, 255]) and not np.array_equal(left[0], [40, 40, 40])
    # a video file name as --output turns frames into a video; --scale enlarges it
    assert _run(workdir, "--input", files, "--output", workdir / "as_video.mp4", "--scale", "2") == 0
    video = _read_video(workdir / "as_video.mp4")
    assert len(video) == NUM_FRAMES and video[0].shape == (2 * HEIGHT, 2 * WIDTH, 3)


def test_clear_errors(workdir, capsys):
    assert _run(workdir, "--video-input", workdir / "missing.mp4", "--output", workdir / "e") == 1
    assert "missing.mp4" in capsys.readouterr().err
    assert _run(workdir, "--input", workdir / "frames" / "*.png", "--output", workdir / "x.png") == 1
    assert "x.png" in capsys.readouterr().err
    cv2.imwrite(str(workdir / "odd.png"), np.zeros((20, 30, 3), np.uint8))
    assert _run(workdir, "--input", workdir / "frames" / "00000.png", workdir / "odd.png",
                "--output", workdir / "e") == 1
    assert "different sizes" in capsys.readouterr().err
    code = demo_video.main(["--config-file", str(workdir / "stand_in.yaml"), "--video-input",
                            str(workdir / "clip.mp4"), "--output", str(workdir / "e"),
                            "--opts", "MODEL.WEIGHTS", str(workdir / "nope.pth")])
    assert code == 1 and "nope.pth" in capsys.readouterr().err


def test_command_line_with_the_real_model(workdir, tmp_path):
    cfg = build_config(TEST_CONFIG, ["MODEL.DEVICE", "cpu"], extra_configs=[add_maskformer2_video_config])
    torch.manual_seed(0)
    DetectionCheckpointer(build_model(cfg), save_dir=str(tmp_path)).save("tiny")
    cmd = [sys.executable, str(REPO_ROOT / "demo" / "demo_video.py"), "--config-file", str(TEST_CONFIG),
           "--video-input", str(workdir / "clip.mp4"), "--output", str(tmp_path / "out"),
           "--confidence-threshold", "0", "--save-json",
           "--opts", "MODEL.WEIGHTS", str(tmp_path / "tiny.pth"), "MODEL.DEVICE", "cpu"]
    proc = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert len(_read_video(tmp_path / "out" / "clip.mp4")) == NUM_FRAMES
    record = json.loads((tmp_path / "out" / "clip.json").read_text())
    instances = record["instances"]
    assert len(instances) == cfg.MASK2FORMER.VIDEO.TEST_TOPK  # threshold 0: every kept query
    assert [i["id"] for i in instances] == list(range(1, len(instances) + 1))
    assert all(len(i["frames"]) == NUM_FRAMES for i in instances)
