"""Point sampling of mask logits, used by the matcher and the mask losses.

Mask2Former computes its mask costs and losses on a few thousand points instead of
every pixel. Points are normalised (x, y) coordinates in [0, 1] over the whole map, so
the same points address a stride-4 prediction and a full-resolution target alike.
"""
import torch
from torch.nn import functional as F

__all__ = [
    "point_sample",
    "bilinear_taps",
    "blend_taps",
    "point_sample_masks",
    "mask_uncertainty",
    "sample_uncertain_points",
]


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


def bilinear_taps(point_coords, height, width):
    """The four pixels, and their weights, that `point_sample` blends at each point.

    Args:
        point_coords (Tensor): (..., P, 2) normalised (x, y) in [0, 1].
        height, width (int): size of the map.

    Returns:
        tuple[Tensor, Tensor]: flat pixel indices (..., P, 4) int64 in [0, H * W) and
        bilinear weights (..., P, 4) in the dtype of the points. A pixel outside the map
        gets weight 0 (and some valid index), which is grid_sample's zero padding.
    """
    grid = 2.0 * point_coords - 1.0
    # grid_sample's pixel coordinate (align_corners=False: pixel centres at integer + 0.5),
    # (g + 1) * size / 2 - 0.5, which its CPU kernel rounds once (fused multiply-add);
    # float64 does the same, so that 0/1 masks sample bit-identically.
    x = ((grid[..., 0].double() + 1) * (width / 2) - 0.5).to(grid.dtype)
    y = ((grid[..., 1].double() + 1) * (height / 2) - 0.5).to(grid.dtype)
    x0, y0 = x.floor(), y.floor()
    dx, dy = x - x0, y - y0
    # corners in the order (x0, y0), (x0 + 1, y0), (x0, y0 + 1), (x0 + 1, y0 + 1)
    xs = torch.stack([x0, x0 + 1, x0, x0 + 1], dim=-1)
    ys = torch.stack([y0, y0, y0 + 1, y0 + 1], dim=-1)
    weight = torch.stack([(1 - dx) * (1 - dy), dx * (1 - dy), (1 - dx) * dy, dx * dy], dim=-1)
    inside = (xs >= 0) & (xs <= width - 1) & (ys >= 0) & (ys <= height - 1)
    index = ys.clamp(0, height - 1).long() * width + xs.clamp(0, width - 1).long()
    return index, weight * inside


def blend_taps(values, weight):
    """Bilinear values from the values at the four taps of each point.

    Args:
        values (Tensor): (..., P * 4) map values (any dtype) at the indices of `bilinear_taps`.
        weight (Tensor): (..., P, 4) its weights, broadcastable to the values.

    Returns:
        Tensor: (..., P) in the dtype of the weights.
    """
    return (values.unflatten(-1, (-1, 4)).to(weight.dtype) * weight).sum(-1)


def point_sample_masks(masks, point_coords):
    """`point_sample` of masks of any dtype (boolean targets included) without converting
    whole maps to float: only the four pixels around each point are read.

    Equals `point_sample(masks[:, None].float(), point_coords)[:, 0]` (bit for bit for 0/1
    masks on the CPU).

    Args:
        masks (Tensor): (N, H, W).
        point_coords (Tensor): (N, P, 2) normalised (x, y) in [0, 1].

    Returns:
        Tensor: (N, P) in the dtype of the points.
    """
    if masks.dim() != 3 or point_coords.dim() != 3 or point_coords.shape[-1] != 2:
        raise ValueError(
            f"point_sample_masks: masks must be (N, H, W) and points (N, P, 2), "
            f"got {tuple(masks.shape)} and {tuple(point_coords.shape)}"
        )
    index, weight = bilinear_taps(point_coords, *masks.shape[-2:])
    return blend_taps(masks.flatten(1).gather(1, index.flatten(1)), weight)


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
    top = torch.topk(uncertainty[:, 0, :], k=num_uncertain, dim=1)[1]  # (N, num_uncertain)
    chosen = torch.gather(candidates, 1, top.unsqueeze(-1).expand(-1, -1, 2))
    if num_random > 0:
        chosen = torch.cat([chosen, torch.rand(num_masks, num_random, 2, device=device)], dim=1)
    return chosen
