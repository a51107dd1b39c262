"""Hungarian matcher: costs, assignment, fp32 under autocast, clear errors on NaN."""
import pytest
import torch
from torch.nn import functional as F

import mask2former.modeling.matcher as matcher_module
from mask2former.modeling.matcher import HungarianMatcher, pairwise_dice, pairwise_sigmoid_ce


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
    monkeypatch.setattr(matcher_module, "pairwise_dice", lambda p, t: torch.full((p.shape[0], t.shape[0]), float("inf")))
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
