"""Semantic test-time augmentation on stand-in models."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mask2former.engine import SemanticSegmentorWithTTA


class _ColourSegmenter(nn.Module):
    """Stand-in model: per-pixel 'class scores' = the image's colour channels, computed on
    the (augmented) input and resized to the requested output size, like MaskFormer's
    semantic output. Records the input sizes it was called with."""

    def __init__(self, panoptic_on=False):
        super().__init__()
        self.calls = []
        self.panoptic_on = panoptic_on

    def forward(self, batched_inputs):
        out = []
        for x in batched_inputs:
            self.calls.append(tuple(x["image"].shape[-2:]))
            scores = x["image"].float()[None] / 255.0
            scores = F.interpolate(scores, size=(x["height"], x["width"]), mode="bilinear", align_corners=False)[0]
            result = {"sem_seg": scores}
            if self.panoptic_on:
                result["panoptic_seg"] = (torch.full((x["height"], x["width"]), len(self.calls)), [])
            out.append(result)
        return out


def _image(h=24, w=32):
    # Left half red, right half blue: flipping without flipping back would swap them.
    img = torch.zeros(3, h, w, dtype=torch.uint8)
    img[0, :, : w // 2] = 255
    img[2, :, w // 2 :] = 255
    return img


def test_multiscale_flip_average_matches_original_orientation():
    model = _ColourSegmenter()
    tta = SemanticSegmentorWithTTA(model, min_sizes=[12, 24, 48], max_size=1000, flip=True)
    out = tta([{"image": _image(), "height": 24, "width": 32}])[0]
    assert out["sem_seg"].shape == (3, 24, 32)
    assert len(model.calls) == 6  # 3 scales x (plain, flipped)
    assert sorted(set(model.calls)) == [(12, 16), (24, 32), (48, 64)]
    expected = _image().float() / 255.0
    # Away from the colour edge, every view agrees with the original after flipping back.
    interior = np.r_[0:12, 20:32]
    assert torch.allclose(out["sem_seg"][:, :, interior], expected[:, :, interior], atol=1e-4)


def test_average_is_mean_of_views():
    model = _ColourSegmenter()
    tta = SemanticSegmentorWithTTA(model, min_sizes=[10, 24], max_size=1000, flip=False)
    img = torch.randint(0, 256, (3, 24, 32), dtype=torch.uint8)
    out = tta([{"image": img, "height": 24, "width": 32}])[0]["sem_seg"]
    # Recompute the two views by hand (resize to short side 10 and 24, back to 24x32).
    from detectron2.data.transforms import ResizeShortestEdge

    view = ResizeShortestEdge(10, 1000).get_transform(img.permute(1, 2, 0).numpy())
    small = torch.from_numpy(view.apply_image(img.permute(1, 2, 0).numpy().copy())).permute(2, 0, 1)
    small_scores = F.interpolate(small.float()[None] / 255, size=(24, 32), mode="bilinear", align_corners=False)[0]
    expected = (small_scores + img.float() / 255) / 2
    assert torch.allclose(out, expected, atol=1e-5)


def test_panoptic_output_comes_from_the_plain_view():
    model = _ColourSegmenter(panoptic_on=True)
    tta = SemanticSegmentorWithTTA(model, min_sizes=[12, 24], max_size=1000, flip=True)
    out = tta([{"image": _image(), "height": 24, "width": 32}])[0]
    # The views are: 12, 12 flipped, 24, 24 flipped; the plain view at the input's own
    # size (24x32) is the third call.
    assert int(out["panoptic_seg"][0][0, 0]) == 3
    # Without a view at the input's size, one extra plain forward pass provides it.
    model.calls.clear()
    tta = SemanticSegmentorWithTTA(model, min_sizes=[12], max_size=1000, flip=False)
    out = tta([{"image": _image(), "height": 24, "width": 32}])[0]
    assert model.calls == [(12, 16), (24, 32)]
    assert "panoptic_seg" in out and out["sem_seg"].shape == (3, 24, 32)


def test_from_config_and_empty_sizes():
    from detectron2.config import get_cfg

    from mask2former.config import add_maskformer2_config

    cfg = get_cfg()
    add_maskformer2_config(cfg)
    cfg.TEST.AUG.MIN_SIZES = (16, 32)
    cfg.TEST.AUG.FLIP = False
    tta = SemanticSegmentorWithTTA(cfg, _ColourSegmenter())
    assert tta.tta_mapper.min_sizes == [16, 32] and not tta.tta_mapper.flip
    with pytest.raises(ValueError, match="MIN_SIZES"):
        SemanticSegmentorWithTTA(_ColourSegmenter(), min_sizes=[], max_size=100, flip=True)
