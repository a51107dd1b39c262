"""tools/: torchvision and Swin weight conversion, model analysis."""
import importlib.util
import json
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.layers import ShapeSpec
from detectron2.modeling import build_resnet_backbone

from demo_test_utils import REPO_ROOT, base_cfg, real_model, tiny_cfg, write_config
from mask2former.utils.weight_conversion import (
    WeightConversionError,
    swin_to_d2,
    torchvision_resnet_to_d2,
)

REFERENCE = Path(__file__).resolve().parent / "reference"
SWIN_REFERENCE = (
    REFERENCE / "state_dict/configs/coco/panoptic-segmentation/swin/maskformer2_swin_tiny_bs16_50ep.json"
)


def _load_tool(name):
    spec = importlib.util.spec_from_file_location(name.replace("-", "_"), REPO_ROOT / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _d2_resnet(depth):
    cfg = base_cfg(overrides=["MODEL.RESNETS.DEPTH", str(depth), "MODEL.RESNETS.RES2_OUT_CHANNELS",
                              "64" if depth < 50 else "256", "MODEL.BACKBONE.FREEZE_AT", "0"])
    return build_resnet_backbone(cfg, ShapeSpec(channels=3)).eval()


def test_torchvision_r50_names_and_shapes_match_detectron2_resnet():
    converted = torchvision_resnet_to_d2(torchvision.models.resnet50(weights=None).state_dict())
    backbone_state = _d2_resnet(50).state_dict()
    assert set(converted) == set(backbone_state)
    for key, value in converted.items():
        assert tuple(value.shape) == tuple(backbone_state[key].shape), key
    assert "res2.0.shortcut.norm.running_var" in converted and "stem.conv1.norm.weight" in converted


def test_torchvision_r18_conversion_cli_gives_same_features(tmp_path):
    torch.manual_seed(0)
    resnet = torchvision.models.resnet18(weights=None).eval()
    for module in resnet.modules():  # non-trivial BatchNorm statistics
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.1, 0.1)
            module.running_var.uniform_(0.5, 1.5)
    torch.save(resnet.state_dict(), tmp_path / "r18.pth")
    tool = _load_tool("convert-torchvision-to-d2")
    assert tool.main([str(tmp_path / "r18.pth"), str(tmp_path / "r18.pkl")]) == 0
    with open(tmp_path / "r18.pkl", "rb") as f:
        payload = pickle.load(f)
    assert payload["__author__"] == "torchvision" and payload["matching_heuristics"] is True
    assert not any(k.startswith("fc.") or "num_batches_tracked" in k for k in payload["model"])

    backbone = _d2_resnet(18)
    DetectionCheckpointer(backbone).load(str(tmp_path / "r18.pkl"))
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        expected = resnet.layer4(resnet.layer3(resnet.layer2(resnet.layer1(
            resnet.maxpool(resnet.relu(resnet.bn1(resnet.conv1(x))))))))
        actual = backbone(x)["res5"]
    assert torch.allclose(actual, expected, atol=1e-4)


def test_torchvision_conversion_rejects_other_files(tmp_path, capsys):
    with pytest.raises(WeightConversionError, match="layer9.0.conv1.weight"):
        torchvision_resnet_to_d2({"conv1.weight": torch.zeros(1), "layer1.0.conv1.weight": torch.zeros(1),
                                  "layer9.0.conv1.weight": torch.zeros(1)})
    torch.save({"patch_embed.proj.weight": torch.zeros(1)}, tmp_path / "swin.pth")
    tool = _load_tool("convert-torchvision-to-d2")
    assert tool.main([str(tmp_path / "swin.pth"), str(tmp_path / "out.pkl")]) == 1
    assert "swin.pth" in capsys.readouterr().err
    assert not (tmp_path / "out.pkl").exists()


def _official_swin_state_dict():
    """A state dict with the key structure of an official Swin-T release: the backbone's
    names from the published key list, plus the classifier, the final norm and the
    attention-mask buffers of shifted blocks (tiny placeholder values)."""
    entries = json.loads(SWIN_REFERENCE.read_text())["entries"]
    names = [name[len("backbone."):] for name, _, _ in entries if name.startswith("backbone.")]
    expected = [n for n in names if not n.startswith(("norm0", "norm1", "norm2", "norm3"))]
    official = {name: torch.full((2,), float(i)) for i, name in enumerate(expected)}
    official.update({"norm.weight": torch.ones(2), "norm.bias": torch.zeros(2),
                     "head.weight": torch.zeros(3, 2), "head.bias": torch.zeros(3),
                     "layers.0.blocks.1.attn_mask": torch.zeros(4, 49, 49)})
    return official, expected


def test_swin_conversion_keeps_backbone_names(tmp_path):
    official, expected = _official_swin_state_dict()
    torch.save({"model": official}, tmp_path / "swin_tiny_patch4_window7_224.pth")
    tool = _load_tool("convert-pretrained-swin-model-to-d2")
    assert tool.main([str(tmp_path / "swin_tiny_patch4_window7_224.pth"), str(tmp_path / "swin.pkl")]) == 0
    with open(tmp_path / "swin.pkl", "rb") as f:
        payload = pickle.load(f)
    assert sorted(payload["model"]) == sorted(expected)
    assert payload["matching_heuristics"] is True
    key = expected[5]
    assert np.array_equal(payload["model"][key], official[key].numpy())
    with pytest.raises(WeightConversionError, match="patch_embed"):
        swin_to_d2({"conv1.weight": torch.zeros(1)})


def test_converted_swin_loads_into_d2_swin_backbone(tmp_path):
    """Round trip through a real (tiny) D2SwinTransformer: every converted tensor lands in
    the backbone; only the per-stage output norms stay missing."""
    from detectron2.modeling import build_backbone

    cfg = base_cfg(overrides=["MODEL.BACKBONE.NAME", "D2SwinTransformer", "MODEL.SWIN.EMBED_DIM", "16",
                              "MODEL.SWIN.DEPTHS", "[2, 2, 1, 1]", "MODEL.SWIN.NUM_HEADS", "[1, 2, 2, 4]"])
    torch.manual_seed(0)
    source = build_backbone(cfg)
    state = source.state_dict()
    official = {k: v for k, v in state.items() if not k.startswith(("norm0", "norm1", "norm2", "norm3"))}
    official.update({"norm.weight": torch.ones(128), "norm.bias": torch.zeros(128),
                     "head.weight": torch.zeros(10, 128), "head.bias": torch.zeros(10),
                     "layers.0.blocks.1.attn_mask": torch.zeros(4, 49, 49)})
    torch.save({"model": official}, tmp_path / "swin.pth")
    tool = _load_tool("convert-pretrained-swin-model-to-d2")
    assert tool.main([str(tmp_path / "swin.pth"), str(tmp_path / "swin.pkl")]) == 0

    torch.manual_seed(1)
    target = build_backbone(cfg)
    from mask2former.utils.checkpoint import load_weights_checked

    report = load_weights_checked(target, str(tmp_path / "swin.pkl"), allow_partial=True)
    assert not report.unexpected and not report.shape_mismatched
    assert sorted({k.split(".")[0] for k in report.missing}) == ["norm0", "norm1", "norm2", "norm3"]
    for key, value in target.state_dict().items():
        if not key.startswith(("norm0", "norm1", "norm2", "norm3")):
            assert torch.equal(value, state[key]), key


def test_analyze_model_on_tiny_config(tmp_path, capsys):
    model = real_model()
    tool = _load_tool("analyze_model")
    config = write_config(tmp_path / "tiny.yaml", tiny_cfg())
    args = tool.get_parser().parse_args(
        ["--config-file", config, "--tasks", "parameter", "flop", "activation", "speed",
         "--input-size", "64", "96", "--device", "cpu", "--num-warmup", "1", "--num-iters", "2"]
    )
    rows = dict(tool.run(args))
    assert float(rows["parameters (M)"]) == pytest.approx(sum(p.numel() for p in model.parameters()) / 1e6, abs=1e-3)
    assert float(rows["GFLOPs"]) > 0 and float(rows["activations (M)"]) > 0 and float(rows["images/s"]) > 0
    out = capsys.readouterr().out
    assert "| GFLOPs" in out and "images/s" in out
    skipped = [line for line in out.splitlines() if line.startswith("Ops not counted")]
    for op in ("ms_deform_attn", "scaled_dot_product_attention", "baddbmm", "addmm", "upsample"):
        assert not any(op in line for line in skipped), f"{op} must be counted: {skipped}"


def test_deformable_attention_flop_handle():
    from mask2former.ops import ms_deform_attn
    from fvcore.nn import FlopCountAnalysis

    tool = _load_tool("flop_count")
    n, lq, m, d, levels, points = 1, 5, 2, 4, 2, 3
    shapes = torch.tensor([[4, 4], [2, 2]])
    starts = torch.tensor([0, 16])
    value = torch.randn(n, 20, m, d)
    locations = torch.rand(n, lq, m, levels, points, 2)
    weights = torch.rand(n, lq, m, levels, points).softmax(-1)

    class Op(torch.nn.Module):
        def forward(self, value, locations, weights):
            return ms_deform_attn(value, shapes, starts, locations, weights)

    analysis = FlopCountAnalysis(Op(), (value, locations, weights))
    analysis.set_op_handle(**{"mask2former::ms_deform_attn": tool.ms_deform_attn_flop_handle,
                              "aten::grid_sampler": tool.grid_sampler_flop_handle})
    by_op = analysis.by_operator()
    samples = n * lq * m * levels * points * d
    if "ms_deform_attn" in by_op:
        assert by_op["ms_deform_attn"] == 5 * samples
    else:
        assert by_op["grid_sampler"] == 4 * samples


def test_attention_flop_handles():
    from fvcore.nn import FlopCountAnalysis

    tool = _load_tool("flop_count")
    q, k, v = torch.randn(2, 4, 10, 8), torch.randn(2, 4, 6, 8), torch.randn(2, 4, 6, 5)
    bias, b1, b2 = torch.randn(3, 10, 6), torch.randn(3, 10, 8), torch.randn(3, 8, 6)

    class Attention(torch.nn.Module):
        def forward(self, q, k, v, bias, b1, b2):
            return torch.nn.functional.scaled_dot_product_attention(q, k, v), torch.baddbmm(bias, b1, b2)

    analysis = FlopCountAnalysis(Attention(), (q, k, v, bias, b1, b2))
    analysis.set_op_handle(**{
        "aten::scaled_dot_product_attention": tool.scaled_dot_product_attention_flop_handle,
        "aten::baddbmm": tool.baddbmm_flop_handle,
    })
    by_op = analysis.by_operator()
    assert by_op["scaled_dot_product_attention"] == 2 * 4 * 10 * 6 * (8 + 5)
    assert by_op["baddbmm"] == 3 * 10 * 8 * 6


def test_flop_count_imports_nothing_from_the_package():
    """bench_inference counts other revisions' models with it: it must not need this one's code."""
    code = "import sys, flop_count; sys.exit(any(m.startswith('mask2former') for m in sys.modules))"
    subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT / "tools", check=True)


def test_check_checkpoint_tool(tmp_path, capsys):
    from demo_test_utils import stand_in_cfg
    from detectron2.modeling import build_model
    from mask2former.utils.checkpoint import save_in_published_format

    tool = _load_tool("check_checkpoint")
    config = write_config(tmp_path / "stand_in.yaml", stand_in_cfg())
    state = build_model(stand_in_cfg()).state_dict()
    save_in_published_format(state, str(tmp_path / "good.pkl"))
    assert tool.main(["--config-file", config, str(tmp_path / "good.pkl")]) == 0
    assert "OK: all 2 keys" in capsys.readouterr().out
    save_in_published_format({"classifier.weight": state["classifier.weight"]}, str(tmp_path / "bad.pkl"))
    assert tool.main(["--config-file", config, str(tmp_path / "bad.pkl")]) == 1
    assert "classifier.bias" in capsys.readouterr().out
    assert tool.main(["--config-file", config, str(tmp_path / "none.pkl")]) == 1
    assert "none.pkl" in capsys.readouterr().err
