"""Test-time augmentation: semantic averaging on stand-in models, query fusion for panoptic
and instance results on MaskFormer models."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from detectron2.data.catalog import Metadata
from detectron2.layers import ShapeSpec
from detectron2.modeling import Backbone, build_model

from mask2former.modeling import MaskFormerWithTTA, QueryFusion
from mask2former.modeling.meta_arch.maskformer_model import MaskFormer
from mask2former.postprocessing import PostprocessOptions

from maskformer_standins import tiny_cfg


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
    tta = MaskFormerWithTTA(model, min_sizes=[12, 24, 48], max_size=1000, flip=True)
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
    tta = MaskFormerWithTTA(model, min_sizes=[10, 24], max_size=1000, flip=False)
    img = torch.randint(0, 256, (3, 24, 32), dtype=torch.uint8)
    out = tta([{"image": img, "height": 24, "width": 32}])[0]["sem_seg"]
    # Recompute the two views by hand (resize to short side 10 and 24, back to 24x32).
    from detectron2.data.transforms import ResizeShortestEdge

    view = ResizeShortestEdge(10, 1000).get_transform(img.permute(1, 2, 0).numpy())
    small = torch.from_numpy(view.apply_image(img.permute(1, 2, 0).numpy().copy())).permute(2, 0, 1)
    small_scores = F.interpolate(small.float()[None] / 255, size=(24, 32), mode="bilinear", align_corners=False)[0]
    expected = (small_scores + img.float() / 255) / 2
    assert torch.allclose(out, expected, atol=1e-5)


def test_without_query_predictions_other_outputs_come_from_the_plain_view():
    model = _ColourSegmenter(panoptic_on=True)
    tta = MaskFormerWithTTA(model, min_sizes=[12, 24], max_size=1000, flip=True)
    out = tta([{"image": _image(), "height": 24, "width": 32}])[0]
    # The views are: 12, 12 flipped, 24, 24 flipped; the plain view at the input's own
    # size (24x32) is the third call.
    assert int(out["panoptic_seg"][0][0, 0]) == 3
    # Without a view at the input's size, one extra plain forward pass provides it.
    model.calls.clear()
    tta = MaskFormerWithTTA(model, min_sizes=[12], max_size=1000, flip=False)
    out = tta([{"image": _image(), "height": 24, "width": 32}])[0]
    assert model.calls == [(12, 16), (24, 32)]
    assert "panoptic_seg" in out and out["sem_seg"].shape == (3, 24, 32)


def test_from_config_and_empty_sizes():
    from mask2former.config import build_config

    cfg = build_config()
    cfg.TEST.AUG.MIN_SIZES = (16, 32)
    cfg.TEST.AUG.FLIP = False
    tta = MaskFormerWithTTA(cfg, _ColourSegmenter())
    assert tta.tta_mapper.min_sizes == [16, 32] and not tta.tta_mapper.flip
    with pytest.raises(ValueError, match="MIN_SIZES"):
        MaskFormerWithTTA(_ColourSegmenter(), min_sizes=[], max_size=100, flip=True)


def test_query_fusion_matches_shuffled_queries():
    """A second view holding the same queries in another order fuses back to the first."""
    g = torch.Generator().manual_seed(0)
    class_probs = torch.rand(6, 4, generator=g).softmax(-1)
    masks = torch.zeros(6, 20, 30)
    for q in range(6):
        masks[q, 3 * q : 3 * q + 5, 4 * q : 4 * q + 6] = 0.9
    fusion = QueryFusion(match_size=16)
    fusion.add(class_probs, masks)
    order = torch.randperm(6, generator=g)
    fusion.add(class_probs[order], masks[order])
    class_logits, mask_logits = fusion.fused_logits()
    assert torch.allclose(class_logits.softmax(-1), class_probs, atol=1e-6)
    assert torch.allclose(mask_logits.sigmoid(), masks, atol=1e-5)
    with pytest.raises(ValueError, match="does not fit"):
        fusion.add(class_probs[:5], masks[:5])


class _PoolBackbone(Backbone):
    """"res2" = the image averaged over 4x4 cells (3 channels)."""

    def forward(self, x):
        return {"res2": F.avg_pool2d(x, 4)}

    def output_shape(self):
        return {"res2": ShapeSpec(channels=3, stride=4)}


class _ShuffledColourQueries(nn.Module):
    """Queries 0-2 segment the red, green and blue parts of the image as classes 0-2, the
    others predict "no object"; every call returns them in a new random order, so query i
    of two views is not the same segment."""

    def __init__(self, num_queries=6):
        super().__init__()
        self.num_queries = num_queries
        self.generator = torch.Generator().manual_seed(0)

    def forward(self, features, mask=None):
        colours = features["res2"]  # (B, 3, h, w) in [0, 1]
        b, _, h, w = colours.shape
        masks = torch.full((b, self.num_queries, h, w), -10.0)
        masks[:, :3] = 16 * (colours - 0.5)
        logits = torch.zeros(b, self.num_queries, 4)
        logits[:, :3, :3] = 10 * torch.eye(3)
        logits[:, 3:, 3] = 10.0
        order = torch.randperm(self.num_queries, generator=self.generator)
        return {"pred_logits": logits[:, order], "pred_masks": masks[:, order], "aux_outputs": []}


def _colour_maskformer():
    return MaskFormer(
        backbone=_PoolBackbone(),
        sem_seg_head=_ShuffledColourQueries(),
        criterion=None,
        num_queries=6,
        metadata=Metadata(thing_dataset_id_to_contiguous_id={1: 0, 2: 1, 3: 2}),
        size_divisibility=32,
        pixel_mean=[0.0, 0.0, 0.0],
        pixel_std=[255.0, 255.0, 255.0],
        postprocess=PostprocessOptions(  # semantic on, thresholds 0.8 by default
            num_classes=3, panoptic_on=True, instance_on=True, detections_per_image=3, thing_classes=frozenset({0, 1, 2})
        ),
    ).eval()


def _category_map(panoptic):
    ids, segments = panoptic
    categories = torch.full(ids.shape, -1)
    for s in segments:
        categories[ids == s["id"]] = s["category_id"]
    return categories


def test_flip_tta_of_a_flip_symmetric_model_gives_its_plain_results():
    """With flipping exact (4-pixel aligned squares, 64 x 64), the flipped view's queries
    are the plain view's in another order: fused by matching, the results equal the plain
    model's. Averaging query i with query i (no matching) would mix colours and lose them."""
    image = torch.zeros(3, 64, 64, dtype=torch.uint8)
    image[0, 8:24, 8:24] = 255
    image[1, 8:28, 36:56] = 255
    image[2, 36:60, 20:44] = 255
    inputs = [{"image": image, "height": 64, "width": 64}]
    model = _colour_maskformer()
    with torch.no_grad():
        plain = model(inputs)[0]
    fused = MaskFormerWithTTA(model, min_sizes=[64], max_size=1000, flip=True)(inputs)[0]

    assert torch.equal(_category_map(fused["panoptic_seg"]), _category_map(plain["panoptic_seg"]))
    assert sorted(s["category_id"] for s in fused["panoptic_seg"][1]) == [0, 1, 2]
    for result in (plain, fused):
        order = result["instances"].pred_classes.argsort()
        result["sorted"] = result["instances"][order]
    assert fused["sorted"].pred_classes.tolist() == [0, 1, 2]
    assert torch.equal(fused["sorted"].pred_masks, plain["sorted"].pred_masks)
    assert torch.allclose(fused["sorted"].scores, plain["sorted"].scores, atol=1e-5)
    assert torch.allclose(fused["sorted"].pred_boxes.tensor, plain["sorted"].pred_boxes.tensor)
    assert torch.allclose(fused["sem_seg"], plain["sem_seg"], atol=1e-5)


def test_multiscale_flip_tta_on_a_real_model():
    cfg = tiny_cfg()
    model = build_model(cfg).eval()
    image = torch.randint(0, 256, (3, 40, 56), dtype=torch.uint8)
    tta = MaskFormerWithTTA(model, min_sizes=[32, 48], max_size=200, flip=True)
    out = tta([{"image": image, "height": 30, "width": 42}])[0]
    assert out["sem_seg"].shape == (3, 30, 42)
    assert out["panoptic_seg"][0].shape == (30, 42)
    assert out["instances"].image_size == (30, 42) and len(out["instances"]) > 0
