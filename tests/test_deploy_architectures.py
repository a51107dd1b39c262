"""torch.export of the other architectures, tiny versions built from the published configs:
a Swin backbone with the MSDeformAttn pixel decoder and masked-attention decoder, and R18
with each FPN pixel decoder and the standard (MaskFormer) transformer decoder. Each program
against eager at two sizes other than the traced one, batch 1 and 2; the check of the
program's size guards over the declared range."""
import sys

import numpy as np
import pytest
import torch

from demo_test_utils import REPO_ROOT
from mask2former import ops
from mask2former.deploy.network import (
    ExportableNetwork,
    _violated_guard,
    example_images,
    export_program,
    smallest_side,
)

sys.path.insert(0, str(REPO_ROOT / "tools"))
import export_model  # noqa: E402

R50 = REPO_ROOT / "configs/coco/panoptic-segmentation/maskformer2_R50_bs16_50ep.yaml"
SWIN_TINY = REPO_ROOT / "configs/coco/panoptic-segmentation/swin/maskformer2_swin_tiny_bs16_50ep.yaml"
SMALL = [
    "MODEL.WEIGHTS", "",
    "MODEL.SEM_SEG_HEAD.NUM_CLASSES", "7",
    "MODEL.SEM_SEG_HEAD.CONVS_DIM", "32",
    "MODEL.SEM_SEG_HEAD.MASK_DIM", "32",
    "MODEL.SEM_SEG_HEAD.TRANSFORMER_ENC_LAYERS", "1",
    "MODEL.MASK_FORMER.HIDDEN_DIM", "32",
    "MODEL.MASK_FORMER.NHEADS", "4",
    "MODEL.MASK_FORMER.DIM_FEEDFORWARD", "64",
    "MODEL.MASK_FORMER.NUM_OBJECT_QUERIES", "10",
    "MODEL.MASK_FORMER.DEC_LAYERS", "3",
]
R18 = ["MODEL.RESNETS.DEPTH", "18", "MODEL.RESNETS.RES2_OUT_CHANNELS", "64"]
STANDARD_DECODER = ["MODEL.MASK_FORMER.TRANSFORMER_DECODER_NAME", "StandardTransformerDecoder"]
ARCHITECTURES = {
    # name: (config, overrides, backbone, pixel decoder, transformer decoder)
    "swin_msdeformattn_masked": (
        SWIN_TINY,
        ["MODEL.SWIN.EMBED_DIM", "32", "MODEL.SWIN.DEPTHS", "[1, 1, 1, 1]", "MODEL.SWIN.NUM_HEADS", "[1, 2, 4, 8]",
         "MODEL.SWIN.WINDOW_SIZE", "7"],
        "D2SwinTransformer", "MSDeformAttnPixelDecoder", "MultiScaleMaskedTransformerDecoder",
    ),
    "r18_fpn_standard": (
        R50,
        R18 + STANDARD_DECODER + ["MODEL.SEM_SEG_HEAD.PIXEL_DECODER_NAME", "BasePixelDecoder",
                                  "MODEL.MASK_FORMER.TRANSFORMER_IN_FEATURE", "res5"],
        "ResNet", "BasePixelDecoder", "StandardTransformerDecoder",
    ),
    "r18_transformer_encoder_standard": (
        R50,
        R18 + STANDARD_DECODER + ["MODEL.SEM_SEG_HEAD.PIXEL_DECODER_NAME", "TransformerEncoderPixelDecoder",
                                  "MODEL.MASK_FORMER.TRANSFORMER_IN_FEATURE", "transformer_encoder"],
        "ResNet", "TransformerEncoderPixelDecoder", "StandardTransformerDecoder",
    ),
}


@pytest.mark.parametrize("name", sorted(ARCHITECTURES))
def test_exported_network_equals_eager_at_other_sizes_and_batches(name):
    config, overrides, backbone, pixel_decoder, predictor = ARCHITECTURES[name]
    if pixel_decoder == "MSDeformAttnPixelDecoder" and not ops._extension.is_available():
        pytest.skip("the compiled op mask2former._C is not built")
    torch.manual_seed(0)
    model = export_model.build_model_for_export(export_model.setup_cfg(str(config), SMALL + overrides))
    head = model.sem_seg_head
    assert [type(m).__name__ for m in (model.backbone, head.pixel_decoder, head.predictor)] == [
        backbone, pixel_decoder, predictor]
    network = ExportableNetwork(model)
    program = export_program(network, model.size_divisibility)
    side = smallest_side(model, model.size_divisibility)
    assert side == (256 if backbone == "D2SwinTransformer" else 64)  # Swin: two 7x7 windows at stride 32
    traced = tuple(example_images(model.size_divisibility, side).shape[-2:])
    runner = program.module()
    torch.manual_seed(1)
    for batch, height, width in [(1, side, side + 64), (2, side + 32, side)]:
        assert (height, width) != traced
        images = torch.randn(batch, 3, height, width)
        with torch.no_grad():
            expected, got = network(images), runner(images)
        for e, g in zip(expected, got):
            assert g.shape == e.shape
            assert (g - e).abs().max().item() < 1e-4, (name, (batch, height, width))


class _Guards:
    """Stands in for an ExportedProgram: only its size guards."""

    def __init__(self, *guards):
        self._guards_code = list(guards)


def test_size_guards_are_checked_over_the_whole_declared_range():
    size = "L['images'].size()"
    assert _violated_guard(_Guards(f"{size}[2] <= 1536", f"{size}[0] >= 1 and {size}[3] >= 64"), 32, 64) is None
    # a window count (H / 32 / 7 windows) assumed not to be a whole number: fails at H = 224
    failed = _violated_guard(_Guards(f"{size}[2] >= 64", f"({size}[2] // 32) % 7 != 0"), 32, 64)
    assert "% 7 != 0" in failed and "(1, 3, 224, 64)" in failed
    failed = _violated_guard(_Guards(f"torch.sym_max(1, {size}[3] // 128) != 1"), 32, 64)
    assert "(1, 3, 64, 64)" in failed
    failed = _violated_guard(_Guards(f"{size}[0] != 1 or {size}[2] > 64"), 32, 64)  # checked size by size
    assert "(1, 3, 64, 64)" in failed
    assert _violated_guard(_Guards(f"{size}[0] != 1"), 32, 64).endswith("(1, 3, 64, 64)")
    assert np.__name__  # numpy is what evaluates the guards
