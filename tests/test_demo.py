"""demo/demo.py on generated images and a generated video, with a stand-in segmenter
(fast) and once through the command line with the real tiny model."""
import json
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.modeling import build_model

from demo_test_utils import REPO_ROOT, base_cfg, load_script, make_image, stand_in_cfg, write_config, write_video
from mask2former.utils.visualizer import all_class_names, resolve_task


demo = load_script("demo/demo.py", "mask2former_demo")


@pytest.fixture
def workdir(tmp_path):
    """Two images (one PNG 48x64, one JPG 40x72) and a stand-in config."""
    cv2.imwrite(str(tmp_path / "a.png"), make_image(48, 64, seed=0))
    cv2.imwrite(str(tmp_path / "b.jpg"), make_image(40, 72, seed=1))
    write_config(tmp_path / "stand_in.yaml", stand_in_cfg())
    return tmp_path


def _run(workdir, *args):
    return demo.main(["--config-file", str(workdir / "stand_in.yaml"), *map(str, args)])


def _snapshot(folder):
    return {name: (folder / name).read_bytes() for name in sorted(os.listdir(folder))}


def test_images_glob_and_file_into_folder_with_json(workdir):
    out = workdir / "out"
    assert _run(workdir, "--input", workdir / "*.png", workdir / "b.jpg", "--output", out, "--save-json") == 0
    assert sorted(os.listdir(out)) == ["a.json", "a.png", "b.json", "b.png"]
    for stem, (height, width) in {"a": (48, 64), "b": (40, 72)}.items():
        drawn = cv2.imread(str(out / f"{stem}.png"))
        assert drawn.shape == (height, width, 3)
        record = json.loads((out / f"{stem}.json").read_text())
        assert record["height"] == height and record["width"] == width
        assert record["task"] == "panoptic"
        segments = record["segments"]
        assert segments, "the stand-in labels every pixel, so there must be segments"
        # panoptic is shown by default; the stand-in's segments tile the whole image
        assert sum(s["area"] for s in segments) == height * width
        names = ["circle", "rectangle", "triangle", "star", "sky", "grass", "water"]
        for s in segments:
            assert s["category"] == names[s["category_id"]]
            x0, y0, x1, y1 = s["bbox"]
            assert 0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height
            assert s["isthing"] == (s["category_id"] < 4)
    # the overlay differs from the input image
    assert not np.array_equal(cv2.imread(str(out / "a.png")), cv2.imread(str(workdir / "a.png")))


def test_single_input_to_file_name_and_tasks(workdir):
    target = workdir / "result.png"
    assert _run(workdir, "--input", workdir / "a.png", "--output", target, "--task", "semantic", "--save-json") == 0
    assert cv2.imread(str(target)).shape == (48, 64, 3)
    semantic = json.loads((workdir / "result.json").read_text())["segments"]
    assert all(0.0 < s["score"] <= 1.0 for s in semantic)
    assert _run(workdir, "--input", workdir / "a.png", "--output", target, "--task", "instance",
                "--confidence-threshold", "1.01", "--save-json") == 0
    assert json.loads((workdir / "result.json").read_text())["segments"] == []
    assert _run(workdir, "--input", workdir / "a.png", "--output", target, "--task", "instance",
                "--confidence-threshold", "0", "--save-json") == 0
    instances = json.loads((workdir / "result.json").read_text())["segments"]
    assert instances and all(s["category_id"] < 4 for s in instances)


def test_auto_task_preference_and_missing_task():
    assert resolve_task({"sem_seg": 0, "instances": 0, "panoptic_seg": 0}) == "panoptic"
    assert resolve_task({"sem_seg": 0, "instances": 0}) == "instance"
    assert resolve_task({"sem_seg": 0}) == "semantic"
    with pytest.raises(ValueError, match="PANOPTIC_ON"):
        resolve_task({"sem_seg": 0}, "panoptic")


def test_video_same_size_fps_and_frame_count(workdir):
    write_video(workdir / "clip.mp4", num_frames=5, height=48, width=64, fps=12.0)
    out = workdir / "videos"
    assert _run(workdir, "--video-input", workdir / "clip.mp4", "--output", out, "--batch-size", "2") == 0
    assert os.listdir(out) == ["clip.mp4"]
    capture = cv2.VideoCapture(str(out / "clip.mp4"))
    frames = 0
    while capture.read()[0]:
        frames += 1
    assert frames == 5
    assert (capture.get(cv2.CAP_PROP_FRAME_WIDTH), capture.get(cv2.CAP_PROP_FRAME_HEIGHT)) == (64, 48)
    assert capture.get(cv2.CAP_PROP_FPS) == pytest.approx(12.0)
    capture.release()


class _FakeCapture:
    def __init__(self, frames):
        self.frames = list(frames)
        self.released = False

    def isOpened(self):
        return True

    def read(self):
        return (True, self.frames.pop(0)) if self.frames else (False, None)

    def release(self):
        self.released = True


def test_webcam_quits_on_q_and_releases_on_ctrl_c():
    from mask2former.predictor import Mask2FormerPredictor

    runner = demo.DemoRunner(Mask2FormerPredictor(stand_in_cfg()), "auto", 0.5, 7)
    capture = _FakeCapture([make_image(seed=i) for i in range(5)])
    keys = iter([-1, ord("q"), -1])
    shown = demo.run_webcam(runner, lambda: capture, show=lambda *a: None, wait_key=lambda d: next(keys))
    assert shown == 2 and capture.released

    capture = _FakeCapture([make_image(seed=i) for i in range(5)])

    def interrupt(*args):
        raise KeyboardInterrupt

    assert demo.run_webcam(runner, lambda: capture, show=interrupt, wait_key=lambda d: -1) == 0
    assert capture.released


def test_errors_are_clear_and_leave_outputs_intact(workdir, capsys):
    out = workdir / "out"
    assert _run(workdir, "--input", workdir / "a.png", workdir / "b.jpg", "--output", out, "--save-json") == 0
    before = _snapshot(out)

    assert _run(workdir, "--input", workdir / "a.png", workdir / "nope.png", "--output", out) == 1
    assert "nope.png" in capsys.readouterr().err
    assert _run(workdir, "--input", workdir / "*.tif", "--output", out) == 1
    assert "matches no files" in capsys.readouterr().err
    (workdir / "broken.png").write_bytes(b"not an image")
    assert _run(workdir, "--input", workdir / "a.png", workdir / "broken.png", "--output", out) == 1
    assert "broken.png" in capsys.readouterr().err
    assert _run(workdir, "--video-input", workdir / "missing.mp4", "--output", out) == 1
    assert "missing.mp4" in capsys.readouterr().err
    assert _run(workdir, "--input", workdir / "a.png", workdir / "b.jpg", "--output", out / "x.png") == 1
    assert "names a file" in capsys.readouterr().err

    # weights saved for 7 classes do not fit a 3-class model: the keys are named
    model = build_model(stand_in_cfg())
    weights = workdir / "stand_in.pth"
    DetectionCheckpointer(model, str(workdir)).save("stand_in")
    write_config(workdir / "three.yaml", stand_in_cfg(["MODEL.SEM_SEG_HEAD.NUM_CLASSES", "3"]))
    args = ["--config-file", str(workdir / "three.yaml"), "--input", str(workdir / "a.png"),
            "--output", str(out), "--opts", "MODEL.WEIGHTS", str(weights)]
    assert demo.main(args) == 1
    err = capsys.readouterr().err
    assert "shape mismatched" in err and "classifier.weight" in err and "classifier.bias" in err
    assert _snapshot(out) == before, "failed runs must not touch earlier outputs"
    assert not [n for n in os.listdir(workdir) if ".tmp-" in n]

    # explicitly allowed, the same weights load partially and the image is written
    assert demo.main(args[:-3] + ["--allow-partial-weights", "--opts", "MODEL.WEIGHTS", str(weights)]) == 0


def test_command_line_with_quickstart_model_checkpoint(tmp_path):
    """The whole command line, in a fresh process, on the quickstart model saved the way
    training saves it (OUTPUT_DIR/model_final.pth)."""
    config = REPO_ROOT / "configs" / "quickstart" / "panoptic_R18_synthetic_test.yaml"
    model = build_model(base_cfg(config, ["MODEL.DEVICE", "cpu"]))
    DetectionCheckpointer(model, str(tmp_path)).save("model_final")
    cv2.imwrite(str(tmp_path / "photo.jpg"), make_image(60, 80, seed=4))
    result = subprocess.run(
        [sys.executable, str(REPO_ROOT / "demo" / "demo.py"), "--config-file", str(config),
         "--input", str(tmp_path / "photo.jpg"), "--output", str(tmp_path / "out"), "--save-json",
         "--task", "semantic", "--opts", "MODEL.WEIGHTS", str(tmp_path / "model_final.pth")],
        capture_output=True, text=True, timeout=300, cwd=str(tmp_path),
        env={**os.environ, "OMP_NUM_THREADS": "2"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert cv2.imread(str(tmp_path / "out" / "photo.png")).shape == (60, 80, 3)
    record = json.loads((tmp_path / "out" / "photo.json").read_text())
    assert (record["height"], record["width"]) == (60, 80)
    assert sum(s["area"] for s in record["segments"]) == 60 * 80


def test_category_names_for_every_published_config():
    """The demo names classes by the model's contiguous ids: thing classes for instance
    models (e.g. Cityscapes instance: 8 of its 19 categories), all categories otherwise."""
    from detectron2.data import MetadataCatalog

    configs = [p for p in sorted((REPO_ROOT / "configs").rglob("*.yaml"))
               if not p.name.startswith("Base") and "quickstart" not in p.parts
               and not p.relative_to(REPO_ROOT / "configs").parts[0].startswith("youtubevis")]  # video models
    assert len(configs) == 47
    for path in configs:
        cfg = base_cfg(path)
        num_classes = cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES
        metadata = MetadataCatalog.get(cfg.DATASETS.TEST[0])
        names = all_class_names(metadata, num_classes)
        assert not any(n.startswith("class ") for n in names[:num_classes]), (path, names[:5])
        if "instance-segmentation" in path.parts and len(metadata.thing_classes) == num_classes:
            assert names == metadata.thing_classes, path
        else:
            assert names[:num_classes] == metadata.stuff_classes[:num_classes], path
    cityscapes = MetadataCatalog.get("cityscapes_fine_instance_seg_val")
    assert all_class_names(cityscapes, 8)[0] == "person"
