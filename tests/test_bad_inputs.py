"""Every mistake a user can make with files, configs and checkpoints ends in one
`error: ...` line naming the file or config key and a non-zero exit (or a correct
result), and never in a silent wrong result. One tiny quickstart checkpoint is trained
once per module and reused; subprocesses only where the import or exit itself matters."""
import errno
import importlib.util
import json
import logging
import os
import signal
import stat
import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch
from detectron2.data import DatasetCatalog
from detectron2.modeling import build_model
from detectron2.structures import BitMasks, Instances
from detectron2.utils.events import EventStorage

from demo_test_utils import REPO_ROOT, make_image, stand_in_cfg, write_config
from mask2former.data.dataset_mappers.build import EvalDatasetMapper, SkipUnreadableImages
from mask2former.data.dataset_mappers.inputs import UnreadableImageError, read_image_checked, read_label_map
from mask2former.data.datasets import register_coco_instances_dataset
from mask2former.engine import AtomicDetectionCheckpointer
from mask2former.evaluation import ValidatedCOCOEvaluator
from mask2former.modeling.matcher import HungarianMatcher
from mask2former.utils import file_io
from mask2former.utils.checkpoint import load_weights_checked
from mask2former.utils.errors import KNOWN_ERRORS, error_line, run_reporting_errors

QUICKSTART = REPO_ROOT / "configs" / "quickstart" / "panoptic_R18_synthetic_test.yaml"
ENV = {**os.environ, "OMP_NUM_THREADS": "2", "PYTHONPATH": str(REPO_ROOT)}


def _load_script(path, name):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


train_net = _load_script(REPO_ROOT / "train_net.py", "train_net_under_test")
demo = _load_script(REPO_ROOT / "demo" / "demo.py", "demo_under_test")


def _train_net(capsys, output_dir, *opts, eval_only=False, resume=False, extra=()):
    """train_net in this process as its command line runs it: (exit status, stderr)."""
    argv = ["--config-file", str(QUICKSTART), *extra]
    argv += ["--eval-only"] * eval_only + ["--resume"] * resume
    args = train_net.get_parser().parse_args(argv + ["OUTPUT_DIR", str(output_dir), *opts])
    capsys.readouterr()
    try:
        train_net.main_reporting_errors(args)
        status = 0
    except SystemExit as e:
        status = e.code
    return status, capsys.readouterr().err


def _error_lines(stderr):
    lines = [line for line in stderr.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, stderr[-2000:]
    assert "Traceback" not in stderr
    return lines[0]


@pytest.fixture(autouse=True)
def _quiet_stale_log_handlers(monkeypatch):
    """detectron2's setup_logger keeps handlers on the stdout of the test that first called
    it; writing to those closed streams must not add "--- Logging error ---" tracebacks to
    the stderr these tests read."""
    monkeypatch.setattr(logging, "raiseExceptions", False)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """OUTPUT_DIR of a one-iteration quickstart run: model_final.pth, last_checkpoint."""
    out = tmp_path_factory.mktemp("trained")
    args = train_net.get_parser().parse_args(
        ["--config-file", str(QUICKSTART), "OUTPUT_DIR", str(out), "SOLVER.MAX_ITER", "1",
         "DATASETS.TEST", "[]"]
    )
    train_net.main(args)
    assert (out / "model_final.pth").is_file()
    return out


# ------------------------------------------------------------------------------ weights
def test_eval_only_refuses_weights_of_another_head(tmp_path, capsys):
    cfg = train_net.setup_cfg(
        train_net.get_parser().parse_args(
            ["--config-file", str(QUICKSTART), "OUTPUT_DIR", str(tmp_path / "w8"),
             "MODEL.SEM_SEG_HEAD.NUM_CLASSES", "8", "MODEL.DEVICE", "cpu"]
        )
    )
    AtomicDetectionCheckpointer(build_model(cfg), str(tmp_path)).save("eight_classes")
    weights = str(tmp_path / "eight_classes.pth")

    status, err = _train_net(capsys, tmp_path / "eval", "MODEL.WEIGHTS", weights, eval_only=True)
    line = _error_lines(err)
    assert status == 1
    assert "eight_classes.pth" in line and "class_embed" in line and "(9," in line
    assert "--allow-partial-weights" in line
    # explicitly allowed, the weights load (no dataset: nothing to evaluate)
    status, err = _train_net(capsys, tmp_path / "eval", "MODEL.WEIGHTS", weights, "DATASETS.TEST", "[]",
                             eval_only=True, extra=["--allow-partial-weights"])
    assert status == 0, err


def test_eval_only_refuses_empty_weights(tmp_path, capsys):
    status, err = _train_net(capsys, tmp_path, "MODEL.WEIGHTS", "", eval_only=True)
    assert status == 1 and "MODEL.WEIGHTS is empty" in _error_lines(err)


def test_missing_weights_file_is_one_error_line(tmp_path, capsys):
    status, err = _train_net(capsys, tmp_path, "MODEL.WEIGHTS", str(tmp_path / "nope.pth"), eval_only=True)
    line = _error_lines(err)
    assert status == 1 and "nope.pth" in line and "does not exist" in line


def test_training_from_other_weights_logs_one_summary(tmp_path, trained, caplog):
    cfg = train_net.setup_cfg(
        train_net.get_parser().parse_args(
            ["--config-file", str(QUICKSTART), "OUTPUT_DIR", str(tmp_path), "MODEL.DEVICE", "cpu",
             "MODEL.MASK_FORMER.NUM_OBJECT_QUERIES", "12"]
        )
    )
    checkpointer = AtomicDetectionCheckpointer(build_model(cfg), str(tmp_path))
    with caplog.at_level(logging.WARNING, logger="mask2former.utils.checkpoint"):
        checkpointer.resume_or_load(str(trained / "model_final.pth"), resume=False)  # fine-tuning: no error
    summaries = [r.getMessage() for r in caplog.records if "Not loaded from the checkpoint" in r.getMessage()]
    assert len(summaries) == 1 and "query_feat" in summaries[0] and "\n" not in summaries[0]


# ----------------------------------------------------------------- config against data
@pytest.mark.parametrize("num_classes", [3, 8])
def test_num_classes_must_match_the_dataset(tmp_path, capsys, num_classes):
    status, err = _train_net(capsys, tmp_path, "MODEL.SEM_SEG_HEAD.NUM_CLASSES", str(num_classes))
    line = _error_lines(err)
    assert status == 1
    assert "synthetic_shapes_mini_train_panoptic" in line and "has 7 classes" in line
    assert "MODEL.SEM_SEG_HEAD.NUM_CLASSES" in line
    assert not (tmp_path / "model_final.pth").exists()


def test_zero_pixel_std_and_non_finite_images_are_named():
    with pytest.raises(ValueError, match=r"MODEL.PIXEL_STD \[0, 0, 0\] must be finite and non-zero"):
        build_model(_tiny_quickstart_cfg(["MODEL.PIXEL_STD", "[0, 0, 0]"]))
    model = build_model(_tiny_quickstart_cfg())
    image = torch.zeros(3, 64, 64)
    image[0, 3, 4] = float("nan")
    with pytest.raises(ValueError, match="'bad.png' has NaN or infinite"):
        model.preprocess_images([{"image": image, "file_name": "bad.png"}])


def test_matcher_divergence_message_names_the_iteration():
    matcher = HungarianMatcher(cost_class=1, cost_mask=1, cost_dice=1, num_points=16)
    outputs = {"pred_logits": torch.full((1, 3, 5), float("nan")), "pred_masks": torch.zeros(1, 3, 8, 8)}
    targets = [{"labels": torch.tensor([1]), "masks": torch.ones(1, 8, 8)}]
    with EventStorage(start_iter=17):
        with pytest.raises(FloatingPointError, match="at iteration 17"):
            matcher(outputs, targets)


def _tiny_quickstart_cfg(extra=()):
    from demo_test_utils import base_cfg

    return base_cfg(QUICKSTART, ["MODEL.DEVICE", "cpu", *extra])


# ------------------------------------------------------------------------- annotations
def _coco_dataset(tmp_path, name, annotations):
    images = tmp_path / "images"
    images.mkdir(exist_ok=True)
    cv2.imwrite(str(images / "a.png"), make_image(32, 32, seed=1))
    data = {
        "images": [{"id": 1, "file_name": "a.png", "height": 32, "width": 32}],
        "categories": [{"id": 1, "name": "thing"}],
        "annotations": annotations,
    }
    json_file = tmp_path / f"{name}.json"
    json_file.write_text(json.dumps(data))
    if name in DatasetCatalog.list():
        DatasetCatalog.remove(name)
    register_coco_instances_dataset(name, str(json_file), str(images))
    return json_file


def _polygon_annotation(id, polygon):
    xs, ys = polygon[0::2], polygon[1::2]
    bbox = [min(xs), min(ys), max(xs) - min(xs), max(ys) - min(ys)]
    return {"id": id, "image_id": 1, "category_id": 1, "iscrowd": 0, "segmentation": [polygon],
            "bbox": bbox, "area": 1.0}


def test_invalid_polygons_are_dropped_for_training_and_evaluation(tmp_path, caplog):
    good = [4, 4, 20, 4, 20, 20, 4, 20]
    annotations = [
        _polygon_annotation(1, good),
        _polygon_annotation(2, [1, 1, 5, 5]),                # 2 points
        _polygon_annotation(3, [1, 1, 5, 5, 9, 9]),          # collinear: zero area
        _polygon_annotation(4, [1, 1, 5, 1, 5, float("nan")]),
    ]
    json_file = _coco_dataset(tmp_path, "bad_polygons_test", annotations)
    with caplog.at_level(logging.WARNING):
        records = DatasetCatalog.get("bad_polygons_test")
    warning = [r.getMessage() for r in caplog.records if str(json_file) in r.getMessage()]
    assert len(warning) == 1 and "3 annotations" in warning[0] and "[2, 3, 4]" in warning[0]
    assert [a["segmentation"] for a in records[0]["annotations"]] == [[good]]

    evaluator = ValidatedCOCOEvaluator("bad_polygons_test", tasks=("segm",), use_fast_impl=False)
    evaluator.reset()
    mask = torch.zeros(1, 32, 32, dtype=torch.bool)
    mask[0, 4:21, 4:21] = True
    pred = Instances((32, 32), pred_masks=mask, scores=torch.tensor([0.9]), pred_classes=torch.tensor([0]))
    pred.pred_boxes = BitMasks(mask).get_bounding_boxes()
    evaluator.process([{"image_id": 1, "height": 32, "width": 32}], [{"instances": pred}])
    results = evaluator.evaluate()  # pycocotools would fail on the invalid polygons
    assert results["segm"]["AP50"] == pytest.approx(100.0)


def test_empty_annotations_list_is_an_error_naming_the_json(tmp_path):
    json_file = _coco_dataset(tmp_path, "no_annotations_test", [])
    with pytest.raises(ValueError, match="empty 'annotations'") as error:
        DatasetCatalog.get("no_annotations_test")
    assert str(json_file) in str(error.value)


# ------------------------------------------------------------------------------ images
def _truncated_jpeg(path, fraction=0.3):
    cv2.imwrite(str(path), make_image(60, 80, seed=3))
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * fraction)])


def test_truncated_jpeg_is_an_error_in_the_demo(tmp_path, capsys):
    write_config(tmp_path / "stand_in.yaml", stand_in_cfg())
    _truncated_jpeg(tmp_path / "photo.jpg")
    capsys.readouterr()
    status = demo.main(["--config-file", str(tmp_path / "stand_in.yaml"), "--input",
                        str(tmp_path / "photo.jpg"), "--output", str(tmp_path / "out")])
    line = _error_lines(capsys.readouterr().err)
    assert status == 1 and "photo.jpg" in line and "truncated" in line.lower()
    assert not (tmp_path / "out" / "photo.png").exists()


def test_truncated_image_in_mappers_errors_or_is_skipped_and_counted(tmp_path):
    _truncated_jpeg(tmp_path / "photo.jpg")
    record = {"file_name": str(tmp_path / "photo.jpg"), "height": 60, "width": 80, "image_id": 0}
    with pytest.raises(UnreadableImageError, match="photo.jpg"):
        read_image_checked(record["file_name"], "RGB")
    cfg = _tiny_quickstart_cfg()
    with pytest.raises(UnreadableImageError, match="photo.jpg"):
        EvalDatasetMapper(cfg, is_train=False)(dict(record))

    def mapper(dataset_dict):
        read_image_checked(dataset_dict["file_name"], "RGB")
        return dataset_dict

    skipping = SkipUnreadableImages(mapper)
    assert skipping(dict(record)) is None and skipping(dict(record)) is None
    assert skipping.num_skipped == 2


# ---------------------------------------------------------------------- I/O and files
def _make_unwritable(folder, monkeypatch):
    """A folder where files cannot be created (chmod; root ignores modes, so then the
    creation itself is made to fail as it would)."""
    folder.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        folder.chmod(0o555)
        return
    real_mkstemp = file_io.tempfile.mkstemp

    def mkstemp(*args, dir=None, **kwargs):
        if dir is not None and os.path.abspath(dir).startswith(str(folder)):
            raise PermissionError(errno.EACCES, "Permission denied", dir)
        return real_mkstemp(*args, dir=dir, **kwargs)

    monkeypatch.setattr(file_io.tempfile, "mkstemp", mkstemp)


def test_demo_output_unwritable_or_disk_full_before_the_model_loads(tmp_path, capsys, monkeypatch):
    write_config(tmp_path / "stand_in.yaml", stand_in_cfg())
    cv2.imwrite(str(tmp_path / "a.png"), make_image(48, 64, seed=0))
    args = ["--config-file", str(tmp_path / "stand_in.yaml"), "--input", str(tmp_path / "a.png")]
    loaded = []
    monkeypatch.setattr(demo, "Mask2FormerPredictor", lambda *a, **k: loaded.append(1))

    _make_unwritable(tmp_path / "locked", monkeypatch)
    capsys.readouterr()
    assert demo.main(args + ["--output", str(tmp_path / "locked")]) == 1
    line = _error_lines(capsys.readouterr().err)
    assert "--output is not writable" in line and "locked" in line

    monkeypatch.setattr(file_io.shutil, "disk_usage", lambda p: type("U", (), {"free": 100})())
    assert demo.main(args + ["--output", str(tmp_path / "full")]) == 1
    assert "full disk" in _error_lines(capsys.readouterr().err)
    assert not loaded, "the model must not be loaded when the output cannot be written"


def test_write_failure_names_the_file_and_keeps_earlier_outputs(tmp_path, capsys, monkeypatch):
    write_config(tmp_path / "stand_in.yaml", stand_in_cfg())
    for i in range(2):
        cv2.imwrite(str(tmp_path / f"im{i}.png"), make_image(48, 64, seed=i))
    written = []
    real_write = demo.atomic_write_bytes

    def fill_disk_after_one(path, data):
        if written:
            with file_io.atomic_open(path) as f:
                f.write(data[:10])
                raise OSError(errno.ENOSPC, "No space left on device")
        real_write(path, data)
        written.append(path)

    monkeypatch.setattr(demo, "atomic_write_bytes", fill_disk_after_one)
    capsys.readouterr()
    status = demo.main(["--config-file", str(tmp_path / "stand_in.yaml"), "--input",
                        str(tmp_path / "im0.png"), str(tmp_path / "im1.png"), "--output", str(tmp_path / "out")])
    line = _error_lines(capsys.readouterr().err)
    assert status == 1 and "No space left on device" in line and "im1.png" in line
    assert sorted(os.listdir(tmp_path / "out")) == ["im0.png"]
    assert cv2.imread(str(tmp_path / "out" / "im0.png")).shape == (48, 64, 3)


def test_truncated_checkpoint_for_demo_and_resume(tmp_path, trained, capsys):
    out = tmp_path / "run"
    out.mkdir()
    data = (trained / "model_final.pth").read_bytes()
    (out / "model_final.pth").write_bytes(data[: len(data) // 3])
    (out / "last_checkpoint").write_text("model_final.pth")

    capsys.readouterr()
    status = demo.main(["--config-file", str(QUICKSTART), "--input", str(_image(tmp_path)), "--output",
                        str(tmp_path / "demo_out"), "--opts", "MODEL.WEIGHTS", str(out / "model_final.pth"),
                        "MODEL.DEVICE", "cpu"])
    line = _error_lines(capsys.readouterr().err)
    assert status == 1 and "Cannot read checkpoint" in line and "model_final.pth" in line

    status, err = _train_net(capsys, out, resume=True)
    line = _error_lines(err)
    assert status == 1 and "Cannot read checkpoint" in line and str(out / "model_final.pth") in line


def _image(folder):
    cv2.imwrite(str(folder / "photo.png"), make_image(48, 64, seed=5))
    return folder / "photo.png"


def test_malformed_datasets_file_fails_when_used_not_at_import(tmp_path):
    """Fresh processes: `import mask2former` and `--help` work; train_net, which uses the
    datasets, exits 1 with one line naming the file and the line."""
    bad = tmp_path / "datasets.yaml"
    bad.write_text("- name: fruit\n  type: semantic_folder\n  image_dir: [unclosed\n")
    env = {**ENV, "MASK2FORMER_DATASETS": str(bad)}
    help_run = subprocess.run([sys.executable, str(REPO_ROOT / "demo" / "demo.py"), "--help"],
                              capture_output=True, text=True, timeout=300, env=env)
    assert help_run.returncode == 0 and "--config-file" in help_run.stdout, help_run.stderr[-2000:]
    use = subprocess.run(
        [sys.executable, str(REPO_ROOT / "train_net.py"), "--config-file", str(QUICKSTART),
         "--eval-only", "OUTPUT_DIR", str(tmp_path / "out"), "MODEL.WEIGHTS", "w.pth"],
        capture_output=True, text=True, timeout=300, env=env, cwd=str(tmp_path),
    )
    assert use.returncode == 1
    line = _error_lines(use.stderr)
    assert "MASK2FORMER_DATASETS" in line and str(bad) in line and "line 4" in line


def test_output_dir_unwritable_or_full_at_the_first_checkpoint(tmp_path, capsys, monkeypatch, caplog):
    _make_unwritable(tmp_path / "locked", monkeypatch)
    status, err = _train_net(capsys, tmp_path / "locked")
    line = _error_lines(err)
    assert status == 1 and "OUTPUT_DIR is not writable" in line and "locked" in line


    def disk_full(obj, f, *args, **kwargs):
        f.write(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", disk_full)
    with caplog.at_level(logging.INFO):
        status, err = _train_net(capsys, tmp_path / "full", "SOLVER.MAX_ITER", "1", "DATASETS.TEST", "[]")
    line = _error_lines(err)
    assert status == 1
    assert "No space left on device" in line and str(tmp_path / "full" / "model_final.pth") in line
    assert not [r for r in caplog.records if r.exc_info], "known failures are logged without a traceback"
    assert not [n for n in os.listdir(tmp_path / "full") if n.startswith(".model_final")]


_WRITER = """
import importlib.util, sys, time
spec = importlib.util.spec_from_file_location("file_io", sys.argv[1])
file_io = importlib.util.module_from_spec(spec); spec.loader.exec_module(file_io)
with file_io.atomic_open(sys.argv[2]) as f:
    f.write(b"partial checkpoint"); f.flush()
    print("writing", flush=True)
    time.sleep(60)
"""


def test_kill_during_checkpoint_write_leaves_no_temporary_file(tmp_path, trained, capsys):
    out = tmp_path / "run"
    out.mkdir()
    for name in ("model_final.pth", "last_checkpoint"):
        (out / name).write_bytes((trained / name).read_bytes())
    writer = subprocess.Popen(
        [sys.executable, "-c", _WRITER, file_io.__file__, str(out / "model_0000009.pth")],
        stdout=subprocess.PIPE, text=True,
    )
    assert writer.stdout.readline().strip() == "writing"
    os.kill(writer.pid, signal.SIGKILL)
    writer.wait()
    leftovers = [n for n in os.listdir(out) if ".tmp-" in n]
    assert len(leftovers) == 1 and leftovers[0].startswith(".model_0000009.pth.tmp-")

    status, err = _train_net(capsys, out, "SOLVER.MAX_ITER", "1", "DATASETS.TEST", "[]", resume=True)
    assert status == 0, err
    assert not [n for n in os.listdir(out) if ".tmp-" in n]
    assert not (out / "model_0000009.pth").exists()


def test_outputs_follow_the_umask(tmp_path, capsys):
    write_config(tmp_path / "stand_in.yaml", stand_in_cfg())
    old = os.umask(0o022)
    try:
        assert demo.main(["--config-file", str(tmp_path / "stand_in.yaml"), "--input", str(_image(tmp_path)),
                          "--output", str(tmp_path / "out"), "--save-json"]) == 0
        checkpointer = AtomicDetectionCheckpointer(torch.nn.Linear(2, 2), str(tmp_path / "ckpt"))
        checkpointer.save("model_final")
    finally:
        os.umask(old)
    for path in (tmp_path / "out" / "photo.png", tmp_path / "out" / "photo.json",
                 tmp_path / "ckpt" / "model_final.pth", tmp_path / "ckpt" / "last_checkpoint"):
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o644, path


# ------------------------------------------------------------------------------- fuzz
def _corrupt(data: bytes, rng) -> bytes:
    """Truncate, flip bytes, or overwrite a run with garbage."""
    kind = rng.integers(3)
    if kind == 0:
        return data[: int(rng.integers(0, len(data)))]
    data = bytearray(data)
    if kind == 1:
        for i in rng.integers(0, len(data), size=int(rng.integers(1, 8))):
            data[i] ^= int(rng.integers(1, 256))
    else:
        start = int(rng.integers(0, len(data)))
        data[start : start + 64] = bytes(rng.integers(0, 256, size=len(data[start : start + 64]), dtype=np.uint8))
    return bytes(data)


def _clean_outcome(call, path):
    """`call()` either succeeds or raises a known error that names `path`."""
    try:
        return call()
    except KNOWN_ERRORS as e:
        assert os.path.basename(str(path)) in error_line(e), error_line(e)
        return None


def test_fuzz_corrupted_inputs_end_cleanly(tmp_path, trained, capsys):
    """Corrupted images, label maps, jsons and checkpoints (FUZZ_TRIALS=40 for a longer run)."""
    rng = np.random.default_rng(0)
    source = tmp_path / "clean.jpg"
    cv2.imwrite(str(source), make_image(40, 56, seed=9))
    label = tmp_path / "clean_label.png"
    cv2.imwrite(str(label), (make_image(40, 56, seed=2)[:, :, 0] % 7).astype(np.uint8))
    weights = (trained / "model_final.pth").read_bytes()
    good_json = _coco_dataset(tmp_path, "fuzz_json_clean", [_polygon_annotation(1, [4, 4, 20, 4, 20, 20])])
    model = build_model(_tiny_quickstart_cfg())
    write_config(tmp_path / "stand_in.yaml", stand_in_cfg())

    for trial in range(int(os.environ.get("FUZZ_TRIALS", "6"))):
        image = tmp_path / f"image_{trial}.jpg"
        image.write_bytes(_corrupt(source.read_bytes(), rng))
        array = _clean_outcome(lambda: read_image_checked(str(image), "RGB"), image)
        assert array is None or array.shape == (40, 56, 3)

        mask = tmp_path / f"label_{trial}.png"
        mask.write_bytes(_corrupt(label.read_bytes(), rng))
        labels = _clean_outcome(lambda: read_label_map(str(mask)), mask)
        assert labels is None or labels.shape == (40, 56)

        json_file = tmp_path / f"fuzz_{trial}.json"
        json_file.write_bytes(_corrupt(good_json.read_bytes(), rng))
        name = f"fuzz_json_{trial}"

        def register_and_load():
            register_coco_instances_dataset(name, str(json_file), str(tmp_path / "images"))
            return DatasetCatalog.get(name)

        _clean_outcome(register_and_load, json_file)

        checkpoint = tmp_path / f"checkpoint_{trial}.pth"
        checkpoint.write_bytes(_corrupt(weights, rng))
        _clean_outcome(lambda: load_weights_checked(model, str(checkpoint)), checkpoint)

        capsys.readouterr()
        status = demo.main(["--config-file", str(tmp_path / "stand_in.yaml"), "--input", str(image),
                            "--output", str(tmp_path / "demo_out")])
        err = capsys.readouterr().err
        if status == 0:
            assert cv2.imread(str(tmp_path / "demo_out" / f"image_{trial}.png")).shape == (40, 56, 3)
        else:
            assert status == 1 and image.name in _error_lines(err)
