"""One-to-one assignment of predicted masks to ground-truth masks (Hungarian matching)."""
import torch
from detectron2.utils.events import get_event_storage
from scipy.optimize import linear_sum_assignment
from torch import nn
from torch.nn import functional as F

from .point_sampling import point_sample


def _at_iteration() -> str:
    """' at iteration N' inside a detectron2 training loop, else ""."""
    try:
        return f" at iteration {get_event_storage().iter}"
    except AssertionError:  # no EventStorage: called outside training
        return ""

__all__ = ["HungarianMatcher", "pairwise_sigmoid_ce", "pairwise_dice"]


def pairwise_sigmoid_ce(pred_logits, target_masks):
    """Mean binary cross-entropy of every prediction against every target.

    Args:
        pred_logits (Tensor): (Q, P) mask logits at P points.
        target_masks (Tensor): (N, P) binary targets at the same points.

    Returns:
        Tensor: (Q, N) cost.
    """
    num_points = pred_logits.shape[1]
    # BCE(x, t) = t * BCE(x, 1) + (1 - t) * BCE(x, 0): two matmuls instead of Q*N*P terms.
    loss_if_one = F.binary_cross_entropy_with_logits(pred_logits, torch.ones_like(pred_logits), reduction="none")
    loss_if_zero = F.binary_cross_entropy_with_logits(pred_logits, torch.zeros_like(pred_logits), reduction="none")
    cost = loss_if_one @ target_masks.T + loss_if_zero @ (1 - target_masks).T
    return cost / num_points


def pairwise_dice(pred_logits, target_masks):
    """Dice cost 1 - (2 sum(p t) + 1) / (sum(p) + sum(t) + 1) for every pair.

    Args:
        pred_logits (Tensor): (Q, P) mask logits at P points.
        target_masks (Tensor): (N, P) binary targets at the same points.

    Returns:
        Tensor: (Q, N) cost.
    """
    probs = pred_logits.sigmoid()
    numerator = 2 * (probs @ target_masks.T)
    denominator = probs.sum(-1)[:, None] + target_masks.sum(-1)[None, :]
    return 1 - (numerator + 1) / (denominator + 1)


class HungarianMatcher(nn.Module):
    """Assigns each target mask of an image to exactly one query.

    Cost per (query, target) = cost_class * (-softmax probability of the target's class)
    + cost_mask * mean sigmoid BCE + cost_dice * dice, the mask terms evaluated at
    `num_points` uniformly random points shared by predictions and targets.
    Queries left unassigned are trained towards "no object".
    """

    def __init__(self, cost_class: float = 1.0, cost_mask: float = 1.0, cost_dice: float = 1.0, num_points: int = 0):
        """
        Args:
            cost_class, cost_mask, cost_dice: weights of the three costs.
            num_points: number of random points for the mask costs (> 0).
        """
        super().__init__()
        if cost_class == 0 and cost_mask == 0 and cost_dice == 0:
            raise ValueError("HungarianMatcher: all cost weights are 0")
        if num_points <= 0:
            raise ValueError(f"HungarianMatcher: num_points must be > 0, got {num_points}")
        self.cost_class = cost_class
        self.cost_mask = cost_mask
        self.cost_dice = cost_dice
        self.num_points = num_points

    @torch.no_grad()
    def forward(self, outputs, targets):
        """
        Args:
            outputs (dict): "pred_logits" (B, Q, K+1) and "pred_masks" (B, Q, h, w).
            targets (list[dict]): per image, "labels" (N,) int64 and "masks" (N, H, W).

        Returns:
            list[tuple[Tensor, Tensor]]: per image, (query indices, target indices), both
            int64 of length min(Q, N); target j is assigned to query i.
        """
        pred_logits = outputs["pred_logits"]
        pred_masks = outputs["pred_masks"]
        if len(targets) != pred_logits.shape[0]:
            raise ValueError(f"HungarianMatcher: {len(targets)} targets for a batch of {pred_logits.shape[0]} images")
        indices = []
        # Costs are compared across queries: half precision would make ties and NaNs.
        with torch.autocast(device_type=pred_logits.device.type, enabled=False):
            for b, target in enumerate(targets):
                indices.append(self._match_image(b, pred_logits[b].float(), pred_masks[b].float(), target))
        return indices

    def _match_image(self, image_index, class_logits, mask_logits, target):
        """class_logits (Q, K+1), mask_logits (Q, h, w); returns (query idx, target idx)."""
        labels = target["labels"]
        if labels.numel() == 0:
            empty = torch.empty(0, dtype=torch.int64)
            return empty, empty.clone()
        target_masks = target["masks"].to(mask_logits)
        cost_class = -class_logits.softmax(-1)[:, labels]  # (Q, N)

        points = torch.rand(1, self.num_points, 2, device=mask_logits.device)
        target_points = self._masks_at_points(target_masks, points)
        pred_points = self._masks_at_points(mask_logits, points)
        cost_mask = pairwise_sigmoid_ce(pred_points, target_points)
        cost_dice = pairwise_dice(pred_points, target_points)

        for name, cost in (("class", cost_class), ("mask", cost_mask), ("dice", cost_dice)):
            if not torch.isfinite(cost).all():
                raise FloatingPointError(
                    f"HungarianMatcher: non-finite {name} cost for image {image_index} of the batch"
                    f"{_at_iteration()} (predictions contain NaN/Inf; training has probably diverged)"
                )
        cost = self.cost_class * cost_class + self.cost_mask * cost_mask + self.cost_dice * cost_dice
        rows, cols = linear_sum_assignment(cost.cpu().numpy())
        return torch.as_tensor(rows, dtype=torch.int64), torch.as_tensor(cols, dtype=torch.int64)

    @staticmethod
    def _masks_at_points(masks, points):
        """(N, h, w) masks read at (1, P, 2) shared points -> (N, P)."""
        return point_sample(masks[:, None], points.expand(masks.shape[0], -1, -1))[:, 0]

    def extra_repr(self):
        return (
            f"cost_class={self.cost_class}, cost_mask={self.cost_mask}, "
            f"cost_dice={self.cost_dice}, num_points={self.num_points}"
        )
