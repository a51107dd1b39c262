"""The 3-D sine positional encoding of video Mask2Former: the image encoding of every frame's
(y, x) plus, added element-wise, an encoding of the frame's position in the clip."""
from typing import Optional

import torch

from ...modeling.transformer_decoder.position_encoding import (
    PositionEmbeddingSine,
    interleaved_sine_cosine,
    sine_frequencies,
)

__all__ = ["PositionEmbeddingSine3D"]


class PositionEmbeddingSine3D(PositionEmbeddingSine):
    """
    Each frame gets `PositionEmbeddingSine` of its pixels (``num_pos_feats`` channels for y,
    then ``num_pos_feats`` for x); added to all ``2 * num_pos_feats`` channels is the
    sine/cosine encoding of the frame index t = 1..T, whose frequencies use
    ``2 * num_pos_feats`` in the exponent's denominator. With ``normalize=True`` the frame
    index is divided by T (+ ``eps``) and multiplied by ``scale``, like y and x.
    """

    def forward(self, x: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """
        Args:
            x: (B, T, C, H, W); only its sizes and device are used.
            mask: (B, T, H, W) bool, True on padding, or None (no padding).

        Returns:
            (B, T, 2 * num_pos_feats, H, W) float32.
        """
        if x.dim() != 5:
            raise ValueError(f"PositionEmbeddingSine3D expects (B, T, C, H, W) features, got {tuple(x.shape)}")
        batch_size, num_frames, _, height, width = x.shape
        if mask is None:
            mask = torch.zeros((batch_size, num_frames, height, width), device=x.device, dtype=torch.bool)
        spatial = super().forward(x.flatten(0, 1), mask.flatten(0, 1))
        spatial = spatial.view(batch_size, num_frames, -1, height, width)

        t_embed = (~mask).cumsum(1, dtype=torch.float32)
        if self.normalize:
            t_embed = t_embed / (t_embed[:, -1:] + self.eps) * self.scale
        dim_t = sine_frequencies(2 * self.num_pos_feats, self.temperature, x.device)
        temporal = interleaved_sine_cosine(t_embed[..., None] / dim_t)  # (B, T, H, W, 2F)
        return spatial + temporal.permute(0, 1, 4, 2, 3)
