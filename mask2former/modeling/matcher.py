"""One-to-one assignment of predicted masks to ground-truth masks (Hungarian matching)."""
import torch
from detectron2.utils.events import get_event_storage
from scipy.optimize import linear_sum_assignment
from torch import nn
from torch.nn import functional as F
from torch.nn.utils.rnn import pad_sequence

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
        pred_logits (Tensor): (..., Q, P) mask logits at P points.
        target_masks (Tensor): (..., N, P) binary targets at the same points.

    Returns:
        Tensor: (..., Q, N) cost.
    """
    num_points = pred_logits.shape[-1]
    # BCE(x, t) = t * BCE(x, 1) + (1 - t) * BCE(x, 0): two matmuls instead of Q*N*P terms,
    # with BCE(x, 1) = -log(sigmoid(x)) and BCE(x, 0) = x - log(sigmoid(x)).
    log_prob = F.logsigmoid(pred_logits)
    loss_if_one = -log_prob
    loss_if_zero = pred_logits - log_prob
    cost = loss_if_one @ target_masks.mT + loss_if_zero @ (1 - target_masks).mT
    return cost / num_points


def pairwise_dice(pred_logits, target_masks):
    """Dice cost 1 - (2 sum(p t) + 1) / (sum(p) + sum(t) + 1) for every pair.

    Args:
        pred_logits (Tensor): (..., Q, P) mask logits at P points.
        target_masks (Tensor): (..., N, P) binary targets at the same points.

    Returns:
        Tensor: (..., Q, N) cost.
    """
    probs = pred_logits.sigmoid()
    numerator = 2 * (probs @ target_masks.mT)
    denominator = probs.sum(-1)[..., :, None] + target_masks.sum(-1)[..., None, :]
    return 1 - (numerator + 1) / (denominator + 1)


class HungarianMatcher(nn.Module):
    """Assigns each target mask of an image to exactly one query.

    Cost per (query, target) = cost_class * (-softmax probability of the target's class)
    + cost_mask * mean sigmoid BCE + cost_dice * dice, the mask terms evaluated at
    `num_points` uniformly random points per image, shared by its predictions and targets.
    Queries left unassigned are trained towards "no object".

    The costs of the whole batch are computed at once, against the targets padded to the
    batch's largest count; only the assignment itself runs per image (on the CPU).
    Masks may carry extra dimensions before (h, w), e.g. frames: their values at the points
    are concatenated into one longer mask.
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
            targets (list[dict]): per image, "labels" (N,) int64 and "masks" (N, H, W),
                boolean or float.

        Returns:
            list[tuple[Tensor, Tensor]]: per image, (query indices, target indices), both
            int64 of length min(Q, N); target j is assigned to query i.
        """
        pred_logits = outputs["pred_logits"]
        pred_masks = outputs["pred_masks"]
        if len(targets) != pred_logits.shape[0]:
            raise ValueError(f"HungarianMatcher: {len(targets)} targets for a batch of {pred_logits.shape[0]} images")
        counts = [len(t["labels"]) for t in targets]
        if max(counts, default=0) == 0:
            return [self._no_match() for _ in targets]
        # Costs are compared across queries: half precision would make ties and NaNs.
        with torch.autocast(device_type=pred_logits.device.type, enabled=False):
            cost = self._batch_cost(pred_logits.float(), pred_masks.float(), targets, counts)
        cost = cost.cpu()
        return [
            self._assign(cost[b, :, :count]) if count else self._no_match() for b, count in enumerate(counts)
        ]

    def _batch_cost(self, class_logits, mask_logits, targets, counts):
        """Weighted cost (B, Q, Nmax) of class_logits (B, Q, K+1) and mask_logits (B, Q, ..., h, w)
        against the targets; columns past an image's count are padding."""
        batch_size, num_queries = class_logits.shape[:2]
        device = class_logits.device
        labels = pad_sequence([t["labels"].to(device) for t in targets], batch_first=True)  # (B, Nmax)
        cost_class = -class_logits.softmax(-1).gather(2, labels[:, None, :].expand(-1, num_queries, -1))

        # One point draw per image with targets, as many random numbers as one draw each
        points = torch.zeros(batch_size, self.num_points, 2, device=device)
        with_targets = [b for b, count in enumerate(counts) if count]
        points[with_targets] = torch.rand(len(with_targets), self.num_points, 2, device=device)
        pred_points = point_sample(mask_logits.flatten(1, -3), points).view(batch_size, num_queries, -1)
        target_points = self._target_points(targets, with_targets, labels.shape[1], points)
        cost_mask = pairwise_sigmoid_ce(pred_points, target_points)
        cost_dice = pairwise_dice(pred_points, target_points)

        self._check_finite(counts, {"class": cost_class, "mask": cost_mask, "dice": cost_dice})
        return self.cost_class * cost_class + self.cost_mask * cost_mask + self.cost_dice * cost_dice

    @staticmethod
    def _target_points(targets, with_targets, max_count, points):
        """The target masks (N, ..., H, W) of each image read at its points (B, P, 2)
        -> (B, Nmax, P'), zero rows for padding."""
        frames = targets[with_targets[0]]["masks"].shape[1:-2].numel()  # 1 for an image
        target_points = points.new_zeros(len(targets), max_count, frames * points.shape[1])
        for b in with_targets:
            # float32 masks (as `SetCriterion` passes them) are sampled without a copy
            masks = targets[b]["masks"].to(points)
            rows = masks.flatten(0, -3)[:, None]  # (N * frames, 1, H, W)
            sampled = point_sample(rows, points[b].expand(len(rows), -1, -1))
            target_points[b, : len(masks)] = sampled.view(len(masks), -1)
        return target_points

    @staticmethod
    def _check_finite(counts, costs):
        """Raises naming the first image, and its first cost, with a non-finite value in a
        real (not padding) target column of `costs` (name -> (B, Q, Nmax))."""
        device = costs["class"].device
        columns = torch.arange(costs["class"].shape[-1], device=device)
        is_padding = columns >= torch.tensor(counts, device=device)[:, None, None]  # (B, 1, Nmax)
        finite = torch.stack([(torch.isfinite(c) | is_padding).flatten(1).all(1) for c in costs.values()])
        if finite.all():
            return
        image = (~finite).any(0).nonzero()[0].item()
        name = list(costs)[(~finite[:, image]).nonzero()[0].item()]
        raise FloatingPointError(
            f"HungarianMatcher: non-finite {name} cost for image {image} of the batch"
            f"{_at_iteration()} (predictions contain NaN/Inf; training has probably diverged)"
        )

    @staticmethod
    def _assign(cost):
        """Minimum-cost assignment of a (Q, N) cost on the CPU -> (query idx, target idx)."""
        rows, cols = linear_sum_assignment(cost.numpy())
        return torch.as_tensor(rows, dtype=torch.int64), torch.as_tensor(cols, dtype=torch.int64)

    @staticmethod
    def _no_match():
        empty = torch.empty(0, dtype=torch.int64)
        return empty, empty.clone()

    def extra_repr(self):
        return (
            f"cost_class={self.cost_class}, cost_mask={self.cost_mask}, "
            f"cost_dice={self.cost_dice}, num_points={self.num_points}"
        )
