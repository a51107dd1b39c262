"""Hungarian matcher: costs, assignment, fp32 under autocast, clear errors on NaN."""
import pytest
import torch
from torch.nn import functional as F

import mask2former.modeling.matcher as matcher_module
from mask2former.modeling.matcher import HungarianMatcher, pairwise_dice, pairwise_sigmoid_ce
from mask2former.modeling.point_sampling import point_sample
from mask2former.video.modeling import VideoHungarianMatcher


def box(height, width, rows, cols, on=8.0, off=-8.0):
    m = torch.full((height, width), off)
    m[rows.start : rows.stop, cols.start : cols.stop] = on
    return m


def obvious_case():
    """3 queries, 2 targets: query 2 is target 0 exactly, query 0 is target 1 exactly,
    query 1 is confidently "no object" with an empty mask."""
    num_classes = 4
    targets = [
        {
            "labels": torch.tensor([3, 1]),
            "masks": torch.stack([box(32, 32, range(0, 16), range(0, 32), 1, 0), box(32, 32, range(16, 32), range(8, 24), 1, 0)]).bool(),
        }
    ]
    logits = torch.full((1, 3, num_classes + 1), -5.0)
    logits[0, 2, 3] = 5.0
    logits[0, 0, 1] = 5.0
    logits[0, 1, num_classes] = 5.0
    masks = torch.stack([box(8, 8, range(4, 8), range(2, 6)), torch.full((8, 8), -8.0), box(8, 8, range(0, 4), range(0, 8))])[None]
    return {"pred_logits": logits, "pred_masks": masks}, targets


def test_obvious_assignment():
    torch.manual_seed(0)
    outputs, targets = obvious_case()
    (rows, cols), = HungarianMatcher(2.0, 5.0, 5.0, num_points=256)(outputs, targets)
    assert rows.dtype == cols.dtype == torch.int64
    assert dict(zip(rows.tolist(), cols.tolist())) == {0: 1, 2: 0}


def test_assignment_follows_masks_when_classes_tie():
    torch.manual_seed(0)
    outputs, targets = obvious_case()
    outputs["pred_logits"] = torch.zeros_like(outputs["pred_logits"])  # no class information
    (rows, cols), = HungarianMatcher(2.0, 5.0, 5.0, num_points=256)(outputs, targets)
    assert dict(zip(rows.tolist(), cols.tolist())) == {0: 1, 2: 0}


def test_batch_with_empty_image():
    torch.manual_seed(0)
    outputs, targets = obvious_case()
    outputs = {k: v.repeat(2, 1, 1, 1) if v.dim() == 4 else v.repeat(2, 1, 1) for k, v in outputs.items()}
    targets = [targets[0], {"labels": torch.zeros(0, dtype=torch.int64), "masks": torch.zeros(0, 32, 32, dtype=torch.bool)}]
    indices = HungarianMatcher(2.0, 5.0, 5.0, num_points=64)(outputs, targets)
    assert len(indices) == 2 and indices[1][0].numel() == 0 and indices[1][1].numel() == 0
    assert len(indices[0][0]) == 2


def test_pairwise_costs_match_their_definitions():
    g = torch.Generator().manual_seed(0)
    pred = torch.randn(5, 40, generator=g) * 3
    target = (torch.rand(3, 40, generator=g) > 0.5).float()
    ce = pairwise_sigmoid_ce(pred, target)
    dice = pairwise_dice(pred, target)
    for q in range(5):
        for t in range(3):
            expected_ce = F.binary_cross_entropy_with_logits(pred[q], target[t])
            p = pred[q].sigmoid()
            expected_dice = 1 - (2 * (p * target[t]).sum() + 1) / (p.sum() + target[t].sum() + 1)
            assert torch.allclose(ce[q, t], expected_ce, atol=1e-5)
            assert torch.allclose(dice[q, t], expected_dice, atol=1e-6)


@pytest.mark.parametrize(
    "where, cost",
    [("pred_logits", "class"), ("pred_masks", "mask")],
)
def test_non_finite_cost_names_image_and_cost(where, cost):
    outputs, targets = obvious_case()
    outputs = {k: v.repeat(2, 1, 1, 1) if v.dim() == 4 else v.repeat(2, 1, 1) for k, v in outputs.items()}
    targets = targets * 2
    outputs[where][1, 0].fill_(float("nan"))
    with pytest.raises(FloatingPointError, match=rf"non-finite {cost} cost for image 1 of the batch"):
        HungarianMatcher(2.0, 5.0, 5.0, num_points=64)(outputs, targets)


def test_inf_mask_logits_report_dice_when_only_dice_breaks(monkeypatch):
    outputs, targets = obvious_case()
    monkeypatch.setattr(
        matcher_module, "pairwise_dice", lambda p, t: torch.full((*p.shape[:-1], t.shape[-2]), float("inf"))
    )
    with pytest.raises(FloatingPointError, match="non-finite dice cost for image 0"):
        HungarianMatcher(2.0, 5.0, 5.0, num_points=64)(outputs, targets)


def test_costs_in_fp32_under_autocast(monkeypatch):
    seen = []
    real = matcher_module.linear_sum_assignment

    def spy(cost):
        seen.append(cost)
        return real(cost)

    monkeypatch.setattr(matcher_module, "linear_sum_assignment", spy)
    outputs, targets = obvious_case()
    torch.manual_seed(0)
    expected = HungarianMatcher(2.0, 5.0, 5.0, num_points=128)(outputs, targets)
    half = {k: v.to(torch.bfloat16) for k, v in outputs.items()}
    torch.manual_seed(0)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = HungarianMatcher(2.0, 5.0, 5.0, num_points=128)(half, targets)
    assert all(c.dtype.name == "float32" for c in seen)
    assert [r.tolist() for r, _ in got] == [r.tolist() for r, _ in expected]
    # the bf16 inputs are only rounded, the cost itself is computed in fp32
    assert abs(seen[1] - seen[0]).max() < 0.1


def test_rejects_bad_arguments():
    with pytest.raises(ValueError, match="num_points"):
        HungarianMatcher(1.0, 1.0, 1.0, num_points=0)
    with pytest.raises(ValueError, match="all cost weights are 0"):
        HungarianMatcher(0.0, 0.0, 0.0, num_points=10)
    outputs, targets = obvious_case()
    with pytest.raises(ValueError, match="2 targets for a batch of 1"):
        HungarianMatcher(1.0, 1.0, 1.0, num_points=10)(outputs, targets * 2)


def per_image_reference(matcher, outputs, targets):
    """The matcher written image by image: its own point draw, float targets and
    (Q, N) costs per image. Returns the assignments and the (Q, N) costs."""
    indices, costs = [], []
    for b, target in enumerate(targets):
        if len(target["labels"]) == 0:
            indices.append((torch.empty(0, dtype=torch.int64), torch.empty(0, dtype=torch.int64)))
            continue
        points = torch.rand(1, matcher.num_points, 2)
        pred = outputs["pred_masks"][b].flatten(0, -3)[:, None]  # (Q [* T], 1, h, w)
        pred = point_sample(pred, points.expand(len(pred), -1, -1)).view(outputs["pred_masks"].shape[1], -1)
        masks = target["masks"].flatten(0, -3)[:, None].float()
        masks = point_sample(masks, points.expand(len(masks), -1, -1)).view(len(target["labels"]), -1)
        cost = (
            -matcher.cost_class * outputs["pred_logits"][b].softmax(-1)[:, target["labels"]]
            + matcher.cost_mask * pairwise_sigmoid_ce(pred, masks)
            + matcher.cost_dice * pairwise_dice(pred, masks)
        )
        rows, cols = matcher_module.linear_sum_assignment(cost.numpy())
        indices.append((torch.as_tensor(rows), torch.as_tensor(cols)))
        costs.append(cost)
    return indices, costs


@pytest.mark.parametrize("frames", [None, 3])
def test_batched_matcher_equals_per_image_reference(monkeypatch, frames):
    # different target counts per image, one image without targets, one with more
    # targets than queries; frames: the video matcher (masks with a frame dimension)
    g = torch.Generator().manual_seed(0)
    counts, num_queries, num_classes = [5, 0, 25, 13], 20, 6
    clip = () if frames is None else (frames,)
    outputs = {
        "pred_logits": torch.randn(len(counts), num_queries, num_classes + 1, generator=g) * 3,
        "pred_masks": torch.randn(len(counts), num_queries, *clip, 12, 12, generator=g) * 4,
    }
    targets = [
        {"labels": torch.randint(0, num_classes, (n,), generator=g), "masks": torch.rand(n, *clip, 40, 40, generator=g) > 0.7}
        for n in counts
    ]
    matcher = (HungarianMatcher if frames is None else VideoHungarianMatcher)(2.0, 5.0, 5.0, num_points=300)
    torch.manual_seed(1)
    expected, expected_costs = per_image_reference(matcher, outputs, targets)

    seen = []
    real = matcher_module.linear_sum_assignment
    monkeypatch.setattr(matcher_module, "linear_sum_assignment", lambda cost: seen.append(cost) or real(cost))
    torch.manual_seed(1)  # one draw of (B, P, 2) gives the numbers of one (1, P, 2) draw per image
    got = matcher(outputs, targets)

    assert [(r.tolist(), c.tolist()) for r, c in got] == [(r.tolist(), c.tolist()) for r, c in expected]
    assert [len(r) for r, _ in got] == [min(n, num_queries) for n in counts]
    assert len(seen) == len(expected_costs) == 3
    for cost, expected_cost in zip(seen, expected_costs):
        assert cost.shape == expected_cost.shape
        # batched matmuls sum in another order than per-image ones: a few float32 ulps
        torch.testing.assert_close(torch.as_tensor(cost), expected_cost, atol=1e-6, rtol=1e-6)

