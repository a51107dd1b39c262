"""Deployment: the tiny quickstart model exported in all three formats (one export, one
AOTInductor build for the whole module), compared with eager PyTorch; the standalone
runner against the model's own inference; loading without detectron2; export failures."""
import json
import os
import subprocess
import sys
import zipfile

import numpy as np
import pytest
import torch

from demo_test_utils import REPO_ROOT

pytest.importorskip("onnxruntime", reason="onnxruntime is not installed (pip install -e .[deploy])")
pytest.importorskip("onnxscript", reason="onnxscript is not installed (pip install -e .[deploy])")

from mask2former import ops  # noqa: E402
from mask2former.deploy.export import export_metadata, metadata_path, save_program, write_metadata  # noqa: E402
from mask2former.deploy.network import ExportableNetwork, ExportError, export_program  # noqa: E402
from mask2former.deploy.runtime import load_metadata, load_network, postprocess_options, predict  # noqa: E402
from mask2former.postprocessing import postprocess_image  # noqa: E402
from mask2former.predictor import Mask2FormerPredictor  # noqa: E402

sys.path.insert(0, str(REPO_ROOT / "tools"))
import export_model  # noqa: E402

if not ops._extension.is_available():
    pytest.skip("the compiled op mask2former._C is not built", allow_module_level=True)

CONFIG = str(REPO_ROOT / "configs/quickstart/panoptic_R18_synthetic_test.yaml")
# Low thresholds, so that a randomly initialised model still yields panoptic segments.
OVERRIDES = ["MODEL.MASK_FORMER.TEST.OBJECT_MASK_THRESHOLD", "0.0", "MODEL.MASK_FORMER.TEST.OVERLAP_THRESHOLD", "0.0"]
FORMATS = {"export": "model.pt2", "aoti": "model_aoti.pt2", "onnx": "model.onnx"}
INPUTS = [(1, 64, 96), (2, 128, 64)]  # (batch, H, W): two sizes other than the traced one


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """The tiny model, its network and the paths of its three exported forms (one trace)."""
    folder = tmp_path_factory.mktemp("deploy")
    torch.manual_seed(0)
    cfg = export_model.setup_cfg(CONFIG, OVERRIDES)
    model = export_model.build_model_for_export(cfg)
    network = ExportableNetwork(model)
    program = export_program(network, model.size_divisibility)
    paths = {fmt: str(folder / name) for fmt, name in FORMATS.items()}
    for fmt, path in paths.items():
        save_program(program, path, fmt)
    write_metadata(metadata_path(paths["export"]), export_metadata(model, cfg, "export"))
    return model, network, paths


@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_exported_network_equals_eager_at_other_sizes_and_batches(exported, fmt):
    _, network, paths = exported
    runner = load_network(paths[fmt])
    assert runner.format == fmt
    torch.manual_seed(1)
    for batch, height, width in INPUTS:
        images = torch.randn(batch, 3, height, width)
        with torch.no_grad():
            expected = network(images)
        got = runner(images)
        for name, e, g in zip(("pred_logits", "pred_masks"), expected, got):
            assert g.shape == e.shape, (fmt, name)
            assert (g - e).abs().max().item() < 1e-4, (fmt, name, (batch, height, width))


def _aoti_wrapper_source(path):
    with zipfile.ZipFile(path) as archive:
        return "".join(archive.read(n).decode() for n in archive.namelist() if n.endswith(".wrapper.cpp"))


@pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="this torch build has no oneDNN (mkldnn)")
def test_aoti_package_runs_frozen_weights_through_onednn(exported):
    # Inductor freezes (folds and prepacks the weights) only in a build without autograd;
    # otherwise every linear layer is a plain addmm and every convolution unpacked.
    source = _aoti_wrapper_source(exported[2]["aoti"])
    assert "_linear_pointwise" in source
    assert "mkldnn__convolution_pointwise" in source
    assert "aoti_torch_cpu_addmm" not in source


def _random_image(height, width, seed):
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, size=(height // 8, width // 8, 3), dtype=np.uint8)
    return np.ascontiguousarray(np.kron(image, np.ones((8, 8, 1), dtype=np.uint8)))  # blocky, not noise


def test_runner_equals_model_inference(exported):
    model, _, paths = exported
    meta = load_metadata(metadata_path(paths["export"]))
    predictor = Mask2FormerPredictor(
        model=model, min_size_test=meta["min_size_test"], max_size_test=meta["max_size_test"],
        input_format=meta["input_format"],
    )
    runner = load_network(paths["export"])
    for seed, (height, width) in enumerate([(80, 120), (136, 96)]):
        rgb = _random_image(height, width, seed)
        expected = predictor(rgb[:, :, ::-1].copy())
        got = predict(runner, meta, [rgb])[0]
        assert torch.allclose(got["sem_seg"], expected["sem_seg"], atol=1e-4)
        panoptic, segments = got["panoptic_seg"]
        assert len(segments) > 0
        assert torch.equal(panoptic, expected["panoptic_seg"][0])
        assert segments == expected["panoptic_seg"][1]
        instances = expected["instances"]
        assert torch.equal(got["instances"].masks, instances.pred_masks)
        assert torch.equal(got["instances"].classes, instances.pred_classes)
        assert torch.allclose(got["instances"].scores, instances.scores, atol=1e-5)


def test_standalone_postprocessing_equals_model_on_hand_made_logits(exported):
    model, _, paths = exported
    options = postprocess_options(load_metadata(metadata_path(paths["export"])))
    assert options == model.postprocess_options
    queries, classes = 10, options.num_classes  # MODEL.MASK_FORMER.NUM_OBJECT_QUERIES of the config
    class_logits = torch.full((queries, classes + 1), -4.0)
    class_logits[torch.arange(queries), torch.arange(queries) % (classes + 1)] = 4.0
    mask_logits = torch.full((queries, 16, 24), -6.0)
    for q in range(queries):  # overlapping vertical stripes
        mask_logits[q, :, 2 * q : 2 * q + 6] = 6.0
    padded, image, output = (64, 96), (60, 90), (120, 180)
    got = postprocess_image(class_logits, mask_logits, padded, image, output, options)
    from mask2former.postprocessing import QueryMaskUpsampler, QueryPredictions

    expected = model.postprocess(QueryPredictions(class_logits, QueryMaskUpsampler(mask_logits, padded, image, output)))
    assert torch.equal(got["panoptic_seg"][0], expected["panoptic_seg"][0])
    assert got["panoptic_seg"][1] == expected["panoptic_seg"][1] and len(got["panoptic_seg"][1]) > 0
    assert torch.equal(got["instances"].masks, expected["instances"].pred_masks)
    assert torch.equal(got["sem_seg"], expected["sem_seg"])


_NO_DETECTRON2 = r"""
import importlib.abc, runpy, sys

class BlockDetectron2(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "detectron2" or name.startswith("detectron2."):
            raise ModuleNotFoundError(f"No module named {name!r} (blocked)", name=name)
        return None

sys.meta_path.insert(0, BlockDetectron2())
from mask2former.deploy import run
for model, task, out in RUNS:
    assert run.main(["--model", model, "--input", IMAGE, "--output", out, "--task", task,
                     "--metadata", META]) == 0
assert not [m for m in sys.modules if m.split(".")[0] == "detectron2"]
"""


def test_exported_models_run_without_detectron2(exported, tmp_path):
    from PIL import Image

    _, _, paths = exported
    image = str(tmp_path / "in.png")
    Image.fromarray(_random_image(72, 104, 3)).save(image)
    runs = [(paths["export"], "panoptic", str(tmp_path / "pan.png")),
            (paths["aoti"], "instance", str(tmp_path / "ins.png")),
            (paths["onnx"], "semantic", str(tmp_path / "sem.png"))]
    script = f"RUNS = {runs!r}\nIMAGE = {image!r}\nMETA = {metadata_path(paths['export'])!r}\n" + _NO_DETECTRON2
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for _, task, out in runs:
        assert Image.open(out).size == (104, 72)
        with open(out[:-4] + ".json") as f:
            assert json.load(f)["task"] == task


def test_demo_with_exported_model_equals_demo_with_eager_model(exported, tmp_path):
    import cv2
    from detectron2.checkpoint import DetectionCheckpointer

    from demo_test_utils import load_script, make_image

    model, _, paths = exported
    demo = load_script("demo/demo.py", "mask2former_demo_exported")
    cv2.imwrite(str(tmp_path / "img.jpg"), make_image(72, 104, seed=4))
    DetectionCheckpointer(model, str(tmp_path)).save("tiny")  # the exported weights, for the eager run
    common = ["--config-file", CONFIG, "--input", str(tmp_path / "img.jpg"), "--save-json", "--task", "panoptic"]
    np.random.seed(0)  # detectron2's Visualizer jitters instance colours with numpy's generator
    assert demo.main(common + ["--output", str(tmp_path / "eager"),
                               "--opts", *OVERRIDES, "MODEL.WEIGHTS", str(tmp_path / "tiny.pth")]) == 0
    np.random.seed(0)
    assert demo.main(common + ["--output", str(tmp_path / "exported"), "--exported", paths["export"],
                               "--opts", *OVERRIDES]) == 0
    results = {run: json.loads((tmp_path / run / "img.json").read_text()) for run in ("eager", "exported")}
    assert results["exported"]["segments"], "thresholds at zero: the random model yields segments"
    assert results["exported"] == results["eager"]
    drawn = {run: cv2.imread(str(tmp_path / run / "img.png")) for run in ("eager", "exported")}
    assert drawn["exported"].shape == (72, 104, 3)
    assert np.array_equal(drawn["exported"], drawn["eager"])


class DataDependentBranch(torch.nn.Module):
    """Python control flow on a tensor's values: torch.export cannot trace it."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        if x.sum() > 0:
            return self.inner(x)
        return -self.inner(x)


def test_unexportable_module_is_named(exported):
    model, _, _ = exported
    predictor = model.sem_seg_head.predictor
    original = predictor.class_embed
    predictor.class_embed = DataDependentBranch(original)
    try:
        with pytest.raises(ExportError, match=r"model\.sem_seg_head\.predictor\.class_embed.*DataDependentBranch"):
            export_program(ExportableNetwork(model), model.size_divisibility)
    finally:
        predictor.class_embed = original


def test_export_tool_rejects_bad_requests(tmp_path, capsys):
    output = str(tmp_path / "m.onnx")
    assert export_model.main(["--config-file", CONFIG, "--format", "onnx", "--output", output,
                              "--dtype", "bfloat16"]) == 2
    assert "float32" in capsys.readouterr().err
    assert export_model.main(["--config-file", str(tmp_path / "missing.yaml"), "--format", "export",
                              "--output", output]) == 2
    assert "missing.yaml" in capsys.readouterr().err
    assert not os.path.exists(output)
