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
    "point_sample_rows",
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
    x_low, x_high, wx_low, wx_high = _axis_taps(x, width)
    y_low, y_high, wy_low, wy_high = _axis_taps(y, height)
    row_low, row_high = y_low * width, y_high * width
    # corners (x_low, y_low), (x_high, y_low), (x_low, y_high), (x_high, y_high)
    index = torch.stack([row_low + x_low, row_low + x_high, row_high + x_low, row_high + x_high], dim=-1)
    weight = torch.stack([wy_low * wx_low, wy_low * wx_high, wy_high * wx_low, wy_high * wx_high], dim=-1)
    return index, weight


def _axis_taps(coord, size):
    """Lower and upper pixel of a pixel coordinate, clamped into [0, size), and their
    linear weights, 0 for a pixel outside the map."""
    low = coord.floor()
    frac = coord - low
    weight_low = (1 - frac) * ((low >= 0) & (low <= size - 1))
    weight_high = frac * ((low >= -1) & (low <= size - 2))
    return low.clamp(0, size - 1).long(), (low + 1).clamp(0, size - 1).long(), weight_low, weight_high


def blend_taps(values, weight):
    """Bilinear values from the values at the four taps of each point.

    Args:
        values (Tensor): (..., P * 4) map values (any dtype) at the indices of `bilinear_taps`.
        weight (Tensor): (..., P, 4) its weights, broadcastable to the values.

    Returns:
        Tensor: (..., P) in the dtype of the weights.
    """
    # boolean values are promoted inside the product, not copied to float first
    return (values.unflatten(-1, (-1, 4)) * weight).sum(-1).to(weight.dtype)


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
    top = torch.topk(uncertainty[:, 0, :], k=num_uncertain, dim=1)[1]  # (N, num_uncertain)
    chosen = torch.gather(candidates, 1, top.unsqueeze(-1).expand(-1, -1, 2))
    if num_random > 0:
        chosen = torch.cat([chosen, torch.rand(num_masks, num_random, 2, device=device)], dim=1)
    return chosen
