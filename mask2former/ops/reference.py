"""Multi-scale deformable attention in plain PyTorch (bilinear sampling via ``grid_sample``).

This is the definition the compiled kernels are tested against, and the fallback used
where the ``mask2former._C`` extension is not built or lacks the input's device.
"""
import torch
import torch.nn.functional as F

__all__ = ["ms_deform_attn_reference"]


def ms_deform_attn_reference(
    value: torch.Tensor,
    spatial_shapes: torch.Tensor,
    level_start_index: torch.Tensor,
    sampling_locations: torch.Tensor,
    attention_weights: torch.Tensor,
) -> torch.Tensor:
    """
    Args:
        value: (N, S, M, D) per-head values of all levels, flattened row-major per level and
            concatenated in level order (S = sum of H_l * W_l).
        spatial_shapes: (L, 2) int64, (H_l, W_l) of each level.
        level_start_index: (L,) int64, offset of each level in S. Levels are taken
            consecutively from ``spatial_shapes``; this argument is accepted for interface
            parity with the kernel.
        sampling_locations: (N, Lq, M, L, P, 2) normalised (x, y); 0 and 1 are the outer
            borders of the map, pixel centres sit at (i + 0.5) / size.
        attention_weights: (N, Lq, M, L, P) weights of the sampled points.

    Returns:
        (N, Lq, M * D): for every query and head, the attention-weighted sum of the values
        bilinearly sampled at its points, zero outside the map.
    """
    del level_start_index
    N, S, M, D = value.shape
    _, Lq, _, L, P, _ = sampling_locations.shape
    level_sizes = [int(h) * int(w) for h, w in spatial_shapes.tolist()]
    values_per_level = value.split(level_sizes, dim=1)
    # grid_sample works in [-1, 1] with align_corners=False matching the pixel-centre convention.
    grids = 2 * sampling_locations - 1
    output = value.new_zeros(N * M, D, Lq)
    for level, (height, width) in enumerate(spatial_shapes.tolist()):
        # (N, H*W, M, D) -> (N*M, D, H, W)
        value_l = values_per_level[level].permute(0, 2, 3, 1).reshape(N * M, D, int(height), int(width))
        # (N, Lq, M, P, 2) -> (N*M, Lq, P, 2)
        grid_l = grids[:, :, :, level].transpose(1, 2).reshape(N * M, Lq, P, 2)
        sampled = F.grid_sample(value_l, grid_l, mode="bilinear", padding_mode="zeros", align_corners=False)
        # (N, Lq, M, P) -> (N*M, 1, Lq, P)
        weights_l = attention_weights[:, :, :, level].transpose(1, 2).reshape(N * M, 1, Lq, P)
        output = output + (sampled * weights_l).sum(-1)
    return output.view(N, M * D, Lq).transpose(1, 2).contiguous()
