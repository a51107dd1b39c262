"""Argument checks of ``ms_deform_attn`` on the Python side: the fake implementation (what
``torch.compile`` and ``torch.export`` trace) and the pure-PyTorch fallback run them. The
compiled kernels check the same in ``csrc/ms_deform_attn_common.h``; a wrong shape raises
ValueError and a wrong dtype TypeError in both. ``torch._check_*`` also works on the
symbolic shapes of tracing."""
import torch

__all__ = ["check_ms_deform_attn_args"]


def check_ms_deform_attn_args(value, spatial_shapes, level_start_index, sampling_locations, attention_weights) -> None:
    """Shapes and dtypes of the op's arguments (not the values of the shapes)."""
    torch._check_value(value.dim() == 4, lambda: f"ms_deform_attn: value must be (N, S, M, D), got {tuple(value.shape)}")
    torch._check_value(
        sampling_locations.dim() == 6 and sampling_locations.shape[5] == 2,
        lambda: f"ms_deform_attn: sampling_locations must be (N, Lq, M, L, P, 2), got {tuple(sampling_locations.shape)}",
    )
    N, _, M, _ = value.shape
    _, Lq, _, L, P, _ = sampling_locations.shape
    torch._check_value(
        sampling_locations.shape[0] == N and sampling_locations.shape[2] == M,
        lambda: f"ms_deform_attn: sampling_locations {tuple(sampling_locations.shape)} does not match value "
        f"{tuple(value.shape)} in batch or heads",
    )
    torch._check_value(
        tuple(attention_weights.shape) == (N, Lq, M, L, P),
        lambda: f"ms_deform_attn: attention_weights must be (N, Lq, M, L, P) = {(N, Lq, M, L, P)}, "
        f"got {tuple(attention_weights.shape)}",
    )
    torch._check_value(
        tuple(spatial_shapes.shape) == (L, 2),
        lambda: f"ms_deform_attn: spatial_shapes must be (L, 2) with L = {L}, got {tuple(spatial_shapes.shape)}",
    )
    torch._check_value(
        tuple(level_start_index.shape) == (L,),
        lambda: f"ms_deform_attn: level_start_index must be (L,) with L = {L}, got {tuple(level_start_index.shape)}",
    )
    torch._check_type(
        spatial_shapes.dtype == torch.int64 and level_start_index.dtype == torch.int64,
        lambda: f"ms_deform_attn: spatial_shapes and level_start_index must be int64, got {spatial_shapes.dtype} "
        f"and {level_start_index.dtype}",
    )
    torch._check_type(
        value.is_floating_point(), lambda: f"ms_deform_attn: value must be a floating-point tensor, got {value.dtype}"
    )
    # The CPU kernel also takes float32 locations under half or bfloat16 values and weights.
    float32_locations = value.device.type == "cpu" and value.dtype in (torch.float16, torch.bfloat16)
    torch._check_type(
        value.dtype == attention_weights.dtype
        and (sampling_locations.dtype == value.dtype or (float32_locations and sampling_locations.dtype == torch.float32)),
        lambda: f"ms_deform_attn: value, sampling_locations and attention_weights must share a dtype"
        f"{' (or be half/bfloat16 with float32 sampling_locations)' if float32_locations else ''}, got "
        f"{value.dtype}, {sampling_locations.dtype} and {attention_weights.dtype}",
    )
