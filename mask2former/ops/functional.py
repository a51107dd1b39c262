"""``ms_deform_attn``: the multi-scale deformable attention op, dispatched by device.

The compiled kernel (``torch.ops.mask2former.ms_deform_attn``) runs where the extension
supports the input's device; elsewhere the ``grid_sample`` reference runs, with one warning
per reason explaining why.
"""
import warnings

import torch

from . import _extension
from .reference import ms_deform_attn_reference

__all__ = ["ms_deform_attn"]

_warned_reasons = set()


def _warn_once(reason: str) -> None:
    if reason not in _warned_reasons:
        _warned_reasons.add(reason)
        warnings.warn(
            f"mask2former: multi-scale deformable attention falls back to the slower pure-PyTorch "
            f"reference ({reason}).",
            RuntimeWarning,
            stacklevel=3,
        )


def _check_inputs(value, spatial_shapes, level_start_index, sampling_locations, attention_weights):
    if value.dim() != 4:
        raise ValueError(f"value must be (N, S, M, D), got shape {tuple(value.shape)}")
    if sampling_locations.dim() != 6 or sampling_locations.shape[-1] != 2:
        raise ValueError(
            f"sampling_locations must be (N, Lq, M, L, P, 2), got shape {tuple(sampling_locations.shape)}"
        )
    N, _, M, _ = value.shape
    _, Lq, _, L, P, _ = sampling_locations.shape
    if sampling_locations.shape[0] != N or sampling_locations.shape[2] != M:
        raise ValueError(
            f"sampling_locations {tuple(sampling_locations.shape)} does not match value "
            f"{tuple(value.shape)} in batch or heads"
        )
    if tuple(attention_weights.shape) != (N, Lq, M, L, P):
        raise ValueError(
            f"attention_weights must be (N, Lq, M, L, P) = {(N, Lq, M, L, P)}, "
            f"got {tuple(attention_weights.shape)}"
        )
    if tuple(spatial_shapes.shape) != (L, 2) or tuple(level_start_index.shape) != (L,):
        raise ValueError(
            f"spatial_shapes must be ({L}, 2) and level_start_index ({L},), got "
            f"{tuple(spatial_shapes.shape)} and {tuple(level_start_index.shape)}"
        )
    if spatial_shapes.dtype != torch.int64 or level_start_index.dtype != torch.int64:
        raise TypeError(
            f"spatial_shapes and level_start_index must be int64, got {spatial_shapes.dtype} "
            f"and {level_start_index.dtype}"
        )
    for name, tensor in (("value", value), ("sampling_locations", sampling_locations),
                         ("attention_weights", attention_weights)):
        if not tensor.is_floating_point():
            raise TypeError(f"{name} must be a floating-point tensor, got {tensor.dtype}")


def ms_deform_attn(
    value: torch.Tensor,
    spatial_shapes: torch.Tensor,
    level_start_index: torch.Tensor,
    sampling_locations: torch.Tensor,
    attention_weights: torch.Tensor,
) -> torch.Tensor:
    """
    Multi-scale deformable attention core: for every query, head, level and point, sample the
    value map bilinearly (zero outside, align_corners=False convention) and sum the samples
    with the attention weights.

    Args:
        value: (N, S, M, D), S = sum over levels of H_l * W_l.
        spatial_shapes: (L, 2) int64 (H_l, W_l).
        level_start_index: (L,) int64 start of each level in S.
        sampling_locations: (N, Lq, M, L, P, 2) normalised (x, y) in [0, 1] (may lie outside).
        attention_weights: (N, Lq, M, L, P).

    The three floating-point inputs are computed in their promoted dtype.

    Returns:
        (N, Lq, M * D)
    """
    _check_inputs(value, spatial_shapes, level_start_index, sampling_locations, attention_weights)
    # Mixed dtypes arise under autocast (e.g. bf16 values, fp32 locations): compute in the
    # widest one rather than lose location precision.
    dtype = torch.promote_types(torch.promote_types(value.dtype, sampling_locations.dtype), attention_weights.dtype)
    value, sampling_locations, attention_weights = (
        t.to(dtype) for t in (value, sampling_locations, attention_weights)
    )
    if _extension.supports(value.device):
        return torch.ops.mask2former.ms_deform_attn(
            value, spatial_shapes, level_start_index, sampling_locations, attention_weights
        )
    _warn_once(_extension.unsupported_reason(value.device))
    return ms_deform_attn_reference(value, spatial_shapes, level_start_index, sampling_locations, attention_weights)
