"""The 2-D sine positional encoding of DETR, used for every attention over image features."""
import math
from typing import Optional

import torch
from torch import nn

__all__ = ["PositionEmbeddingSine", "sine_frequencies", "interleaved_sine_cosine"]


def sine_frequencies(num_feats: int, temperature: float, device=None) -> torch.Tensor:
    """(num_feats,) divisors: channel pairs (2i, 2i+1) share temperature^(2i / num_feats)."""
    dim_t = torch.arange(num_feats, dtype=torch.float32, device=device)
    return temperature ** (2 * torch.div(dim_t, 2, rounding_mode="floor") / num_feats)


def interleaved_sine_cosine(scaled: torch.Tensor) -> torch.Tensor:
    """(..., F) positions already divided by their frequencies -> (..., F): sine of the even
    channels and cosine of the odd ones, interleaved (sin, cos, sin, cos, ...)."""
    return torch.stack((scaled[..., 0::2].sin(), scaled[..., 1::2].cos()), dim=-1).flatten(-2)


class PositionEmbeddingSine(nn.Module):
    """
    Encodes each pixel's (y, x) position as sines and cosines of geometrically spaced
    frequencies: ``num_pos_feats`` channels for y followed by ``num_pos_feats`` for x.

    With ``normalize=True`` the running position (1..H, 1..W, counting only unpadded pixels)
    is divided by the last one (+ ``eps``) and multiplied by ``scale`` (2*pi), so the encoding
    does not depend on the image size. The module has no parameters or buffers.
    """

    def __init__(
        self,
        num_pos_feats: int = 64,
        temperature: float = 10000,
        normalize: bool = False,
        scale: Optional[float] = None,
        eps: float = 1e-6,
    ):
        super().__init__()
        if scale is not None and not normalize:
            raise ValueError("PositionEmbeddingSine: `scale` is only used with normalize=True")
        self.num_pos_feats = num_pos_feats
        self.temperature = temperature
        self.normalize = normalize
        self.scale = 2 * math.pi if scale is None else scale
        self.eps = eps

    def forward(self, x: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """
        Args:
            x: (B, C, H, W); only its batch size, spatial size and device are used.
            mask: (B, H, W) bool, True on padding, or None (no padding).

        Returns:
            (B, 2 * num_pos_feats, H, W) float32.
        """
        batch_size, _, height, width = x.shape
        if mask is None:
            # No padding: the y encoding is the same along every row and the x one along every
            # column, so compute them on one column / row and broadcast (same values).
            mask = torch.zeros((1, height, width), device=x.device, dtype=torch.bool)
            y_embed = (~mask[:, :, :1]).cumsum(1, dtype=torch.float32)  # (1, H, 1)
            x_embed = (~mask[:, :1, :]).cumsum(2, dtype=torch.float32)  # (1, 1, W)
        else:
            y_embed = (~mask).cumsum(1, dtype=torch.float32)
            x_embed = (~mask).cumsum(2, dtype=torch.float32)
        if self.normalize:
            y_embed = y_embed / (y_embed[:, -1:, :] + self.eps) * self.scale
            x_embed = x_embed / (x_embed[:, :, -1:] + self.eps) * self.scale

        dim_t = sine_frequencies(self.num_pos_feats, self.temperature, x.device)
        shape = (batch_size, height, width, self.num_pos_feats)
        pos_x = interleaved_sine_cosine(x_embed[:, :, :, None] / dim_t).expand(shape)
        pos_y = interleaved_sine_cosine(y_embed[:, :, :, None] / dim_t).expand(shape)
        return torch.cat((pos_y, pos_x), dim=3).permute(0, 3, 1, 2)

    def extra_repr(self) -> str:
        return (
            f"num_pos_feats={self.num_pos_feats}, temperature={self.temperature}, "
            f"normalize={self.normalize}, scale={self.scale:.4f}, eps={self.eps}"
        )
