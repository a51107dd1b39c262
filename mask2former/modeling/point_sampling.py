"""Point sampling of mask logits, used by the matcher and the mask losses.

Mask2Former computes its mask costs and losses on a few thousand points instead of
every pixel. Points are normalised (x, y) coordinates in [0, 1] over the whole map, so
the same points address a stride-4 prediction and a full-resolution target alike.
"""
import torch
from torch.nn import functional as F

__all__ = ["point_sample", "point_sample_rows", "mask_uncertainty", "sample_uncertain_points"]


def point_sample(features, point_coords):
    """Bilinearly sample `features` at normalised points.

    Pixel centres sit at integer + 0.5 (grid_sample with align_corners=False); points
    outside the map read zeros. Like `detectron2.projects.point_rend.point_sample`, but the
    grid takes the features' dtype, so that half-precision features can be sampled.

    Args:
        features (Tensor): (N, C, H, W).
        point_coords (Tensor): (N, P, 2) normalised (x, y) in [0, 1].

    Returns:
        Tensor: (N, C, P).
    """
    if point_coords.dim() != 3 or point_coords.shape[-1] != 2:
        raise ValueError(f"point_coords must be (N, P, 2), got {tuple(point_coords.shape)}")
    grid = (2.0 * point_coords - 1.0).unsqueeze(2)  # (N, P, 1, 2) in grid_sample's [-1, 1]
    sampled = F.grid_sample(features, grid.to(features.dtype), mode="bilinear", align_corners=False)
    return sampled.squeeze(3)


def point_sample_rows(features, rows, point_coords):
    """`point_sample(features[rows], point_coords)` without copying the selected rows.

    When no row is selected twice (a one-to-one matching), each row's points are put in
    place and the whole tensor is sampled; unselected rows read one corner point each.

    Args:
        features (Tensor): (R, C, H, W).
        rows (Tensor): (N,) int64 row indices.
        point_coords (Tensor): (N, P, 2) normalised (x, y) in [0, 1].

    Returns:
        Tensor: (N, C, P).
    """
    if torch.unique(rows).numel() != rows.numel():
        return point_sample(features[rows], point_coords)
    grid = point_coords.new_zeros(features.shape[0], *point_coords.shape[1:])
    grid[rows] = point_coords
    return point_sample(features, grid)[rows]


def mask_uncertainty(logits):
    """Uncertainty of mask logits: -|logit|, highest where the prediction is closest to 0.5.

    Args:
        logits (Tensor): (N, 1, ...) logits of one class-agnostic mask per row.

    Returns:
        Tensor: same shape as `logits`.
    """
    return -torch.abs(logits)


def sample_uncertain_points(mask_logits, num_points, oversample_ratio, importance_sample_ratio):
    """Pick points for the mask losses by importance sampling (PointRend style).

    Draws `oversample_ratio * num_points` uniform points, keeps the
    `importance_sample_ratio * num_points` most uncertain of them and fills up with
    fresh uniform points, so training focuses on mask boundaries while still seeing
    the whole mask.

    Args:
        mask_logits (Tensor): (N, 1, H, W) predicted mask logits.
        num_points (int): points per mask.
        oversample_ratio (float): >= 1.
        importance_sample_ratio (float): in [0, 1].

    Returns:
        Tensor: (N, num_points, 2) normalised (x, y) coordinates.
    """
    if oversample_ratio < 1:
        raise ValueError(f"oversample_ratio must be >= 1, got {oversample_ratio}")
    if not 0 <= importance_sample_ratio <= 1:
        raise ValueError(f"importance_sample_ratio must be in [0, 1], got {importance_sample_ratio}")
    num_masks = mask_logits.shape[0]
    device = mask_logits.device
    num_sampled = int(num_points * oversample_ratio)
    candidates = torch.rand(num_masks, num_sampled, 2, device=device)
    uncertainty = mask_uncertainty(point_sample(mask_logits, candidates))  # (N, 1, S)
    num_uncertain = int(importance_sample_ratio * num_points)
    num_random = num_points - num_uncertain
    # The losses average over the points: their order does not matter, and sorting them took
    # half of the selection's time.
    top = torch.topk(uncertainty[:, 0, :], k=num_uncertain, dim=1, sorted=False)[1]  # (N, num_uncertain)
    chosen = torch.gather(candidates, 1, top.unsqueeze(-1).expand(-1, -1, 2))
    if num_random > 0:
        chosen = torch.cat([chosen, torch.rand(num_masks, num_random, 2, device=device)], dim=1)
    return chosen
