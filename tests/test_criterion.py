"""Set criterion: loss values, normalisation, empty targets, aux suffixes and weights,
importance sampling, and the meta-architecture's training targets."""
import math
from pathlib import Path

import pytest
import torch
from torch.nn import functional as F

from detectron2.modeling import build_model
from detectron2.structures import BitMasks, Instances

import mask2former.modeling.criterion as criterion_module
from mask2former.config import build_config
from mask2former.modeling.criterion import SetCriterion, dice_loss, sigmoid_ce_loss
from mask2former.modeling.matcher import HungarianMatcher
from mask2former.modeling.point_sampling import point_sample, point_sample_rows, sample_uncertain_points
from maskformer_standins import loss_weights, tiny_maskformer

REPO = Path(__file__).resolve().parents[1]


class FixedMatcher(torch.nn.Module):
    """Assigns target j to query j (as many as there are targets); counts its calls."""

    def __init__(self):
        super().__init__()
        self.calls = 0

    def forward(self, outputs, targets):
        self.calls += 1
        return [(torch.arange(len(t["labels"])), torch.arange(len(t["labels"]))) for t in targets]


def make_criterion(num_classes=3, num_aux=0, matcher=None, num_points=64):
    return SetCriterion(
        num_classes,
        matcher=matcher or HungarianMatcher(2.0, 5.0, 5.0, num_points=num_points),
        weight_dict=loss_weights(num_aux),
        eos_coef=0.1,
        num_points=num_points,
    )


def empty_target(size=(32, 32)):
    return {"labels": torch.zeros(0, dtype=torch.int64), "masks": torch.zeros(0, *size, dtype=torch.bool)}


def test_empty_weight_buffer():
    criterion = make_criterion(num_classes=5)
    assert "empty_weight" in dict(criterion.named_buffers())
    assert criterion.empty_weight.tolist() == pytest.approx([1, 1, 1, 1, 1, 0.1])
    assert list(criterion.state_dict()) == ["empty_weight"]


def test_no_targets_gives_finite_losses_and_gradients():
    torch.manual_seed(0)
    logits = torch.randn(2, 4, 4, requires_grad=True)
    masks = torch.randn(2, 4, 8, 8, requires_grad=True)
    outputs = {"pred_logits": logits, "pred_masks": masks, "aux_outputs": [{"pred_logits": logits, "pred_masks": masks}]}
    losses = make_criterion(num_aux=1)(outputs, [empty_target(), empty_target()])
    assert set(losses) == {"loss_ce", "loss_mask", "loss_dice", "loss_ce_0", "loss_mask_0", "loss_dice_0"}
    assert all(torch.isfinite(v) for v in losses.values())
    assert losses["loss_mask"] == 0 and losses["loss_dice"] == 0
    # all queries are trained towards "no object"
    expected_ce = F.cross_entropy(logits.reshape(-1, 4), torch.full((8,), 3))
    assert torch.allclose(losses["loss_ce"], expected_ce)
    sum(losses.values()).backward()
    assert torch.isfinite(logits.grad).all() and torch.isfinite(masks.grad).all()


def test_loss_ce_weights_no_object():
    torch.manual_seed(0)
    logits = torch.randn(1, 4, 4)
    target = {"labels": torch.tensor([2, 0]), "masks": torch.ones(2, 8, 8, dtype=torch.bool)}
    criterion = make_criterion(matcher=FixedMatcher())
    losses = criterion({"pred_logits": logits, "pred_masks": torch.zeros(1, 4, 2, 2)}, [target])
    classes = torch.tensor([2, 0, 3, 3])  # queries 0, 1 matched; 2, 3 "no object"
    per_query = F.cross_entropy(logits[0], classes, reduction="none")
    weights = torch.tensor([1.0, 1.0, 0.1, 0.1])
    assert torch.allclose(losses["loss_ce"], (per_query * weights).sum() / weights.sum())


def constant_prediction_losses(mask_counts):
    """Losses for zero mask logits against empty target masks: every sampled point then
    gives BCE log(2) and p = 0.5, t = 0, wherever it falls (grid_sample's zero padding
    included), so per-mask losses are known exactly."""
    num_queries = 6
    targets = [
        {"labels": torch.zeros(n, dtype=torch.int64), "masks": torch.zeros(n, 16, 16, dtype=torch.bool)} for n in mask_counts
    ]
    outputs = {
        "pred_logits": torch.zeros(len(mask_counts), num_queries, 4),
        "pred_masks": torch.zeros(len(mask_counts), num_queries, 4, 4),
    }
    return make_criterion(matcher=FixedMatcher(), num_points=50)(outputs, targets)


PER_MASK_BCE = math.log(2)
PER_MASK_DICE = 1 - 1 / (0.5 * 50 + 1)


def test_mask_losses_normalised_by_number_of_masks():
    for counts in ([1, 3], [4], [2, 0]):
        losses = constant_prediction_losses(counts)
        # sum over all masks of the batch / number of masks of the batch = per-mask value
        assert losses["loss_mask"].item() == pytest.approx(PER_MASK_BCE, abs=1e-6), counts
        assert losses["loss_dice"].item() == pytest.approx(PER_MASK_DICE, abs=1e-6), counts


def test_num_masks_averaged_over_workers(monkeypatch):
    # Another worker holding 8 masks: (4 + 8) / 2 = 6 masks per worker.
    monkeypatch.setattr(criterion_module.comm, "get_world_size", lambda: 2)
    monkeypatch.setattr(criterion_module.dist, "all_reduce", lambda t: t.add_(8))
    losses = constant_prediction_losses([1, 3])
    assert losses["loss_mask"].item() == pytest.approx(PER_MASK_BCE * 4 / 6, abs=1e-6)
    assert losses["loss_dice"].item() == pytest.approx(PER_MASK_DICE * 4 / 6, abs=1e-6)


def test_num_masks_at_least_one():
    criterion = make_criterion()
    assert criterion.num_masks_per_worker([empty_target()], torch.device("cpu")) == 1.0
    target = {"labels": torch.zeros(3, dtype=torch.int64)}
    assert criterion.num_masks_per_worker([target, target], torch.device("cpu")) == 6.0


def test_aux_losses_suffixed_and_skipped_without_weights():
    torch.manual_seed(0)
    outputs = {"pred_logits": torch.randn(1, 4, 4), "pred_masks": torch.randn(1, 4, 8, 8)}
    outputs["aux_outputs"] = [{"pred_logits": torch.randn(1, 4, 4), "pred_masks": torch.randn(1, 4, 8, 8)} for _ in range(3)]
    target = {"labels": torch.tensor([1]), "masks": torch.ones(1, 32, 32, dtype=torch.bool)}

    matcher = FixedMatcher()
    losses = make_criterion(num_aux=3, matcher=matcher)(outputs, [target])
    assert set(losses) == {f"{n}{s}" for n in ("loss_ce", "loss_mask", "loss_dice") for s in ("", "_0", "_1", "_2")}
    assert matcher.calls == 4
    # aux i is evaluated on aux_outputs[i]
    only_aux1 = make_criterion(matcher=FixedMatcher())(outputs["aux_outputs"][1], [target])
    assert torch.allclose(losses["loss_ce_1"], only_aux1["loss_ce"])

    matcher = FixedMatcher()
    losses = make_criterion(num_aux=0, matcher=matcher)(outputs, [target])
    assert set(losses) == {"loss_ce", "loss_mask", "loss_dice"} and matcher.calls == 1


def test_importance_sampling_prefers_uncertain_points():
    torch.manual_seed(0)
    logits = torch.full((2, 1, 40, 40), 10.0)
    logits[:, :, :, 16:24] = 0.0  # uncertain band: 20% of the map
    points = sample_uncertain_points(logits, 1000, oversample_ratio=3.0, importance_sample_ratio=0.75)
    assert points.shape == (2, 1000, 2) and points.min() >= 0 and points.max() <= 1
    in_band = (points[..., 0] >= 16 / 40) & (points[..., 0] <= 24 / 40)
    # the ~600 band candidates among 3000 are all among the 750 most uncertain (in no
    # particular order); the last 250 points are uniform
    assert in_band[:, :750].float().mean() > 0.75
    assert 0.55 < in_band.float().mean() < 0.75
    assert in_band[:, 750:].float().mean() < 0.4


def test_point_sample_reads_pixel_centres():
    features = torch.arange(12.0).view(1, 1, 3, 4)
    centres = torch.tensor([[[0.5 / 4, 0.5 / 3], [3.5 / 4, 2.5 / 3], [1.5 / 4, 1.5 / 3]]])
    assert torch.allclose(point_sample(features, centres).flatten(), torch.tensor([0.0, 11.0, 5.0]), atol=1e-5)
    # half a pixel outside the border, bilinear weights mix in zero padding
    outside = torch.tensor([[[0.0, 0.5 / 3]]])
    assert point_sample(features, outside).item() == pytest.approx(0.0, abs=1e-6)
    assert point_sample(features + 1, outside).item() == pytest.approx(0.5, abs=1e-5)


def test_point_sample_rows_equals_sampling_the_selected_rows():
    g = torch.Generator().manual_seed(0)
    features = torch.randn(6, 2, 10, 10, generator=g)
    for rows in (torch.tensor([4, 0, 2]), torch.tensor([1, 3, 1])):  # the second selects a row twice
        points = torch.rand(3, 50, 2, generator=g)
        assert torch.equal(point_sample_rows(features, rows, points), point_sample(features[rows], points))


def reference_mask_losses(criterion, outputs, targets, indices, num_masks):
    """loss_mask and loss_dice with the matched target masks copied and converted to float."""
    batch_idx = torch.cat([torch.full_like(src, b) for b, (src, _) in enumerate(indices)])
    query_idx = torch.cat([src for src, _ in indices])
    pred = outputs["pred_masks"][batch_idx, query_idx][:, None]
    target = torch.cat([t["masks"][j] for t, (_, j) in zip(targets, indices)])[:, None].float()
    points = sample_uncertain_points(pred, criterion.num_points, criterion.oversample_ratio, criterion.importance_sample_ratio)
    pred_points, target_points = point_sample(pred, points)[:, 0], point_sample(target, points)[:, 0]
    return sigmoid_ce_loss(pred_points, target_points, num_masks), dice_loss(pred_points, target_points, num_masks)


def test_mask_losses_of_every_output_equal_reference(monkeypatch):
    g = torch.Generator().manual_seed(0)
    counts = [3, 0, 7]

    def output():
        return {"pred_logits": torch.randn(3, 5, 4, generator=g), "pred_masks": torch.randn(3, 5, 8, 8, generator=g) * 3}

    outputs = dict(output(), aux_outputs=[output(), output()])
    targets = [
        {"labels": torch.randint(0, 3, (n,), generator=g), "masks": torch.rand(n, 32, 32, generator=g) > 0.6}
        for n in counts
    ]
    conversions = []
    real = criterion_module.all_target_masks
    monkeypatch.setattr(criterion_module, "all_target_masks", lambda *a: conversions.append(1) or real(*a))
    criterion = make_criterion(num_aux=2)
    torch.manual_seed(1)
    losses = criterion(outputs, targets)
    assert len(conversions) == 1  # the float targets serve all three outputs

    torch.manual_seed(1)  # the same random numbers: matcher, then loss points, output by output
    for suffix, out in zip(["", "_0", "_1"], [outputs, *outputs["aux_outputs"]]):
        indices = criterion.matcher(out, targets)
        loss_mask, loss_dice = reference_mask_losses(criterion, out, targets, indices, num_masks=sum(counts))
        torch.testing.assert_close(losses[f"loss_mask{suffix}"], loss_mask, atol=1e-6, rtol=0)
        torch.testing.assert_close(losses[f"loss_dice{suffix}"], loss_dice, atol=1e-6, rtol=0)


def instances(classes, masks):
    inst = Instances(tuple(masks.image_size if isinstance(masks, BitMasks) else masks.shape[-2:]))
    inst.gt_classes = torch.tensor(classes, dtype=torch.int64)
    inst.gt_masks = masks
    return inst


def test_model_losses_weighted_with_padding_and_empty_images(monkeypatch):
    torch.manual_seed(0)
    model = tiny_maskformer(num_queries=5, num_classes=3, num_aux=2).train()
    raw = {}
    real_forward = model.criterion.forward

    def recording_forward(outputs, targets):
        raw["targets"] = targets
        raw["losses"] = real_forward(outputs, targets)
        return raw["losses"]

    monkeypatch.setattr(model.criterion, "forward", recording_forward)
    big = torch.zeros(2, 40, 70, dtype=torch.bool)
    big[0, :20], big[1, 20:] = True, True
    small = torch.ones(1, 20, 30, dtype=torch.uint8)
    batch = [
        {"image": torch.randint(0, 256, (3, 40, 70), dtype=torch.uint8), "instances": instances([0, 2], BitMasks(big))},
        {"image": torch.randint(0, 256, (3, 20, 30), dtype=torch.uint8), "instances": instances([1], small)},
        {"image": torch.zeros(3, 24, 24, dtype=torch.uint8), "instances": instances([], torch.zeros(0, 24, 24, dtype=torch.bool))},
    ]
    losses = model(batch)
    weights = loss_weights(2)
    assert set(losses) == set(weights)
    for name, value in losses.items():
        assert torch.isfinite(value)
        assert torch.allclose(value, raw["losses"][name] * weights[name])
    # targets padded to the padded batch (multiple of 32), zeros outside the image
    masks = [t["masks"] for t in raw["targets"]]
    assert [tuple(m.shape) for m in masks] == [(2, 64, 96), (1, 64, 96), (0, 64, 96)]
    assert masks[1][0, :20, :30].all() and not masks[1][0, 20:].any() and not masks[1][0, :, 30:].any()
    assert torch.equal(masks[0][:, :40, :70], big)
    sum(losses.values()).backward()


def test_model_rejects_mismatched_targets():
    model = tiny_maskformer().train()
    batch = [{"image": torch.zeros(3, 32, 32, dtype=torch.uint8), "instances": instances([0, 1], torch.zeros(2, 32))}]
    with pytest.raises(ValueError, match=r"batched_inputs\[0\]\['instances'\]\.gt_masks"):
        model(batch)
    with pytest.raises(ValueError, match=r"batched_inputs\[0\] has no 'instances'"):
        model([{"image": torch.zeros(3, 32, 32, dtype=torch.uint8)}])


def published_cfg(deep_supervision=True):
    path = REPO / "configs/coco/panoptic-segmentation/maskformer2_R50_bs16_50ep.yaml"
    if not path.exists():
        pytest.skip(f"published config {path.name} not in the checkout")
    cfg = build_config(path)
    cfg.MODEL.MASK_FORMER.DEEP_SUPERVISION = deep_supervision
    cfg.MODEL.DEVICE = "cpu"
    return cfg


@pytest.mark.parametrize("deep_supervision", [True, False])
def test_from_config_weights_and_options(deep_supervision):
    cfg = published_cfg(deep_supervision)
    model = build_model(cfg)
    assert [name for name, _ in model.named_children()] == ["backbone", "sem_seg_head", "criterion"]
    assert list(model.state_dict())[-1] == "criterion.empty_weight"
    assert "pixel_mean" not in model.state_dict()
    weights = model.criterion.weight_dict
    final = {"loss_ce": 2.0, "loss_mask": 5.0, "loss_dice": 5.0}
    expected = dict(final)
    if deep_supervision:
        expected.update({f"{k}_{i}": v for i in range(9) for k, v in final.items()})
    assert weights == expected
    assert model.criterion.num_points == 12544 and model.criterion.empty_weight[-1].item() == pytest.approx(0.1)
    options = model.postprocess_options
    assert model.size_divisibility == 32 and options.num_classes == 133
    assert options.panoptic_on and options.instance_on and options.semantic_on
    assert options.resize_before_semantic  # forced by panoptic/instance
    assert options.detections_per_image == 100 and options.object_mask_threshold == 0.8
