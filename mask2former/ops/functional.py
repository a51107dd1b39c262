"""``ms_deform_attn``: the multi-scale deformable attention op, dispatched by device.

The compiled kernel (``torch.ops.mask2former.ms_deform_attn``) runs where the extension
supports the input's device; elsewhere the ``grid_sample`` reference runs, with one warning
per reason explaining why.
"""
import warnings

import torch

from . import _extension
from .checks import check_ms_deform_attn_args
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


def _kernel_takes_float32_locations(value, sampling_locations, attention_weights) -> bool:
    # Inference only: the backward on bf16 values ran at half the speed of the float32 one
    # (its reductions over the channels do not vectorise with the conversions).
    needs_grad = torch.is_grad_enabled() and any(t.requires_grad for t in (value, sampling_locations, attention_weights))
    return (
        not needs_grad
        and value.device.type == "cpu"
        and value.dtype in (torch.float16, torch.bfloat16)
        and attention_weights.dtype == value.dtype
        and sampling_locations.dtype == torch.float32
        and _extension.supports(value.device)
    )


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

    The three floating-point inputs are computed in their promoted dtype, except that at
    inference the compiled CPU kernel reads float32 locations under half or bfloat16 values
    and weights as they are (what autocast gives; the result is the same, without a widened
    copy of the values).

    Returns:
        (N, Lq, M * D)
    """
    floats = (value, sampling_locations, attention_weights)
    # Mixed dtypes arise under autocast (e.g. bf16 values, fp32 locations): compute in the
    # widest one rather than lose location precision. A non-float input is left for the
    # checks to name.
    if all(t.is_floating_point() for t in floats) and not _kernel_takes_float32_locations(*floats):
        dtype = torch.promote_types(torch.promote_types(value.dtype, sampling_locations.dtype), attention_weights.dtype)
        value, sampling_locations, attention_weights = (t.to(dtype) for t in floats)
    # The kernels check their arguments themselves (as the fake implementation does when traced).
    if _extension.supports(value.device):
        return torch.ops.mask2former.ms_deform_attn(
            value, spatial_shapes, level_start_index, sampling_locations, attention_weights
        )
    check_ms_deform_attn_args(value, spatial_shapes, level_start_index, sampling_locations, attention_weights)
    _warn_once(_extension.unsupported_reason(value.device))
    return ms_deform_attn_reference(value, spatial_shapes, level_start_index, sampling_locations, attention_weights)
