"""ResNet backbones used by the configs: detectron2's, with the norms the configs ask for,
and the DeepLab variant (3x3-conv stem, dilated res5 with multi-grid) registered on import."""
import pytest
import torch
from detectron2.layers import FrozenBatchNorm2d
from detectron2.modeling import BACKBONE_REGISTRY, build_backbone

import mask2former  # noqa: F401  (registers the backbones)
from mask2former.config import build_config


def _cfg(**resnets):
    cfg = build_config()
    cfg.MODEL.RESNETS.DEPTH = 50
    cfg.MODEL.RESNETS.OUT_FEATURES = ["res2", "res3", "res4", "res5"]
    for key, value in resnets.items():
        cfg.MODEL.RESNETS[key] = value
    return cfg


def test_deeplab_resnet_stem_dilation_and_multi_grid():
    if "build_resnet_deeplab_backbone" not in BACKBONE_REGISTRY:
        pytest.skip("detectron2 was installed without its DeepLab project")
    cfg = _cfg(STEM_TYPE="deeplab", STEM_OUT_CHANNELS=128, RES5_DILATION=2, RES5_MULTI_GRID=[1, 2, 4])
    cfg.MODEL.BACKBONE.NAME = "build_resnet_deeplab_backbone"
    model = build_backbone(cfg).eval()
    keys = model.state_dict().keys()
    assert {"stem.conv1.weight", "stem.conv2.weight", "stem.conv3.weight"} <= set(keys)
    assert tuple(model.stem.conv3.weight.shape) == (128, 64, 3, 3)
    assert [b.conv2.dilation for b in model.res5] == [(2, 2), (4, 4), (8, 8)]
    shapes = model.output_shape()
    assert {k: v.stride for k, v in shapes.items()} == {"res2": 4, "res3": 8, "res4": 16, "res5": 16}
    with torch.no_grad():
        out = model(torch.randn(1, 3, 64, 96))
    assert tuple(out["res5"].shape) == (1, 2048, 4, 6) and tuple(out["res2"].shape) == (1, 256, 16, 24)


@pytest.mark.parametrize("norm", ["FrozenBN", "SyncBN"])
def test_resnet_norm_follows_the_config(norm):
    cfg = _cfg(NORM=norm, STEM_TYPE="basic")
    cfg.MODEL.BACKBONE.NAME = "build_resnet_backbone"
    cfg.MODEL.BACKBONE.FREEZE_AT = 0  # as in the published configs (frozen stages become FrozenBN)
    with torch.device("meta"):
        model = build_backbone(cfg)
    stem_norm = model.stem.conv1.norm
    if norm == "FrozenBN":
        assert isinstance(stem_norm, FrozenBatchNorm2d)
        assert "stem.conv1.norm.weight" not in dict(model.named_parameters())
    else:
        assert isinstance(stem_norm, torch.nn.modules.batchnorm._BatchNorm) and "Sync" in type(stem_norm).__name__
        assert "stem.conv1.norm.weight" in dict(model.named_parameters())
        assert "stem.conv1.norm.num_batches_tracked" in model.state_dict()
