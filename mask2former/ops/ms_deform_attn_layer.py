"""``MSDeformAttn``: the multi-scale deformable attention layer of the pixel decoder's encoder."""
import math

import torch
from torch import nn
from torch.autograd.function import once_differentiable

from . import onednn
from .functional import ms_deform_attn

__all__ = ["MSDeformAttn"]


def _softmax_of_short_rows(x: torch.Tensor) -> torch.Tensor:
    """`x.softmax(-1)` for rows as short as a head's n_levels * n_points weights (12). On the
    CPU as max, exp, sum and divide passes in float32, and in training with its backward
    written out the same way: PyTorch's CPU softmax kernel took six times as long on such
    rows, forward and backward three times (equal up to float rounding)."""
    if x.device.type != "cpu" or not onednn.rewrites_apply():
        return x.softmax(-1)
    if torch.is_grad_enabled() and x.requires_grad:
        return _ShortRowSoftmax.apply(x)
    return _float32_softmax(x).to(x.dtype)


def _float32_softmax(x: torch.Tensor) -> torch.Tensor:
    y = x.float()
    y = (y - y.amax(-1, keepdim=True)).exp_()
    return y.div_(y.sum(-1, keepdim=True))


class _ShortRowSoftmax(torch.autograd.Function):
    """`_float32_softmax` with the softmax gradient y * (g - sum(g * y)) over each row."""

    @staticmethod
    def forward(ctx, x):
        y = _float32_softmax(x)
        ctx.save_for_backward(y)
        return y.to(x.dtype)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        (y,) = ctx.saved_tensors
        gy = grad.float() * y
        return gy.sub_(y * gy.sum(-1, keepdim=True)).to(grad.dtype)


class MSDeformAttn(nn.Module):
    """
    Each query attends to ``n_points`` locations per head and level, placed around its
    reference point by learned offsets, and mixes the bilinearly sampled values with
    learned weights (softmax over the ``n_levels * n_points`` samples of a head).

    Parameter names and shapes match the published checkpoints:
    ``sampling_offsets`` Linear(d_model, n_heads * n_levels * n_points * 2),
    ``attention_weights`` Linear(d_model, n_heads * n_levels * n_points),
    ``value_proj`` and ``output_proj`` Linear(d_model, d_model).
    """

    def __init__(self, d_model: int = 256, n_levels: int = 4, n_heads: int = 8, n_points: int = 4):
        super().__init__()
        if d_model % n_heads != 0:
            raise ValueError(f"d_model ({d_model}) must be divisible by n_heads ({n_heads})")
        self.d_model = d_model
        self.n_levels = n_levels
        self.n_heads = n_heads
        self.n_points = n_points

        self.sampling_offsets = nn.Linear(d_model, n_heads * n_levels * n_points * 2)
        self.attention_weights = nn.Linear(d_model, n_heads * n_levels * n_points)
        self.value_proj = nn.Linear(d_model, d_model)
        self.output_proj = nn.Linear(d_model, d_model)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # Offsets start as a fixed star: head h looks along direction 2*pi*h/n_heads, point p at
        # distance p+1 pixels (direction scaled so its larger component is 1), on every level.
        nn.init.zeros_(self.sampling_offsets.weight)
        angles = torch.arange(self.n_heads, dtype=torch.float64) * (2.0 * math.pi / self.n_heads)
        directions = torch.stack([angles.cos(), angles.sin()], dim=-1)  # (M, 2)
        directions = directions / directions.abs().max(dim=-1, keepdim=True).values
        distances = torch.arange(1, self.n_points + 1, dtype=torch.float64)
        bias = directions[:, None, None, :] * distances[None, None, :, None]  # (M, 1, P, 2)
        bias = bias.expand(self.n_heads, self.n_levels, self.n_points, 2)
        with torch.no_grad():
            self.sampling_offsets.bias.copy_(bias.reshape(-1))
        nn.init.zeros_(self.attention_weights.weight)
        nn.init.zeros_(self.attention_weights.bias)
        nn.init.xavier_uniform_(self.value_proj.weight)
        nn.init.zeros_(self.value_proj.bias)
        nn.init.xavier_uniform_(self.output_proj.weight)
        nn.init.zeros_(self.output_proj.bias)

    def forward(
        self,
        query: torch.Tensor,
        reference_points: torch.Tensor,
        input_flatten: torch.Tensor,
        input_spatial_shapes: torch.Tensor,
        input_level_start_index: torch.Tensor,
        input_padding_mask: torch.Tensor = None,
    ) -> torch.Tensor:
        """
        Args:
            query: (N, Lq, C) queries (already including their positional encoding).
            reference_points: (N, Lq, L, 2) normalised (x, y) in [0, 1] per level.
            input_flatten: (N, S, C) the multi-scale feature maps, flattened and concatenated.
            input_spatial_shapes: (L, 2) int64 (H_l, W_l).
            input_level_start_index: (L,) int64 start of each level in S.
            input_padding_mask: (N, S) bool, True where the input is padding, or None.

        Returns:
            (N, Lq, C)
        """
        N, Lq, C = query.shape
        _, S, _ = input_flatten.shape
        M, L, P = self.n_heads, self.n_levels, self.n_points
        if C != self.d_model or input_flatten.shape[2] != self.d_model:
            raise ValueError(
                f"query {tuple(query.shape)} and input_flatten {tuple(input_flatten.shape)} must have "
                f"d_model={self.d_model} channels"
            )
        if tuple(reference_points.shape) != (N, Lq, L, 2):
            raise ValueError(
                f"reference_points must be (N, Lq, n_levels, 2) = {(N, Lq, L, 2)}, "
                f"got {tuple(reference_points.shape)}"
            )
        if tuple(input_spatial_shapes.shape) != (L, 2):
            raise ValueError(
                f"input_spatial_shapes must be (n_levels, 2) = {(L, 2)}, got {tuple(input_spatial_shapes.shape)}"
            )
        if not torch.compiler.is_compiling():
            total = int((input_spatial_shapes[:, 0] * input_spatial_shapes[:, 1]).sum())
            if total != S:
                raise ValueError(
                    f"input_spatial_shapes cover {total} positions but input_flatten has S={S}"
                )

        value = onednn.linear(input_flatten, self.value_proj)
        if input_padding_mask is not None:
            value = value.masked_fill(input_padding_mask[..., None], 0.0)
        value = value.view(N, S, M, C // M)

        offsets = onednn.linear(query, self.sampling_offsets).view(N, Lq, M, L, P, 2)
        weights = _softmax_of_short_rows(onednn.linear(query, self.attention_weights).view(N, Lq, M, L * P))
        weights = weights.view(N, Lq, M, L, P)
        # Offsets are in pixels of each level: divide by (W_l, H_l) to move in normalised units.
        # Both operands are spelled out over a head's contiguous (L, P, 2) block: broadcast
        # inside it (dimensions of size 2 and 1), the division and the sum ran 10x slower.
        # In the reference points' precision (float32 under autocast): bf16 offsets divided in
        # bf16 would lose a fraction of a pixel, and a mixed-dtype sum takes PyTorch's slow path.
        offsets = offsets.to(torch.promote_types(offsets.dtype, reference_points.dtype))
        level_sizes_xy = input_spatial_shapes.flip(-1).to(offsets.dtype)  # (L, 2) = (W_l, H_l)
        level_sizes_xy = level_sizes_xy[:, None, :].expand(L, P, 2).contiguous()
        reference = reference_points[:, :, None, :, None, :].expand(N, Lq, 1, L, P, 2).contiguous()
        sampling_locations = reference + offsets / level_sizes_xy
        output = ms_deform_attn(value, input_spatial_shapes, input_level_start_index, sampling_locations, weights)
        return onednn.linear(output, self.output_proj)
