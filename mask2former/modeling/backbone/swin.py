"""Swin Transformer backbone (Liu et al., ICCV 2021) as a detectron2 ``Backbone``.

Parameter names follow the published Mask2Former checkpoints (``patch_embed.proj``,
``layers.{i}.blocks.{j}.attn.relative_position_bias_table``, ``layers.{i}.downsample``,
``norm{i}``). Inputs of any size work: every stage pads to a multiple of the window size
internally and crops back.

Padding is unconditional and sizes are rounded up as ``((n - 1) // m + 1) * m``: with no
branch on a size and no modulo in the shape arithmetic, ``torch.export`` traces one graph
that holds for every input size (a zero pad changes no value).
"""
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
import torch.utils.checkpoint as checkpoint
from detectron2.config import configurable
from detectron2.layers import ShapeSpec
from detectron2.modeling import BACKBONE_REGISTRY, Backbone
from torch import Tensor, nn
from torchvision.ops import StochasticDepth

__all__ = [
    "D2SwinTransformer",
    "SwinTransformer",
    "window_partition",
    "window_reverse",
    "shifted_window_attention_mask",
]


class Mlp(nn.Module):
    """fc1 -> GELU -> dropout -> fc2 -> dropout."""

    def __init__(self, in_features: int, hidden_features: int, drop: float = 0.0):
        super().__init__()
        self.fc1 = nn.Linear(in_features, hidden_features)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_features, in_features)
        self.drop = nn.Dropout(drop)

    def forward(self, x: Tensor) -> Tensor:
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))


def ceil_div(size: int, divisor: int) -> int:
    """ceil(size / divisor) for size >= 1, as ``(size - 1) // divisor + 1``: nested, these
    collapse into one floor division (ceil(ceil(H / 4) / 2) = (H - 1) // 8 + 1), the form
    of a convolution's output size, so traced stage sizes stay simple."""
    return (size - 1) // divisor + 1


def ceil_to_multiple(size: int, multiple: int) -> int:
    """The smallest multiple of ``multiple`` that is at least ``size`` (>= 1)."""
    return ceil_div(size, multiple) * multiple


def window_partition(x: Tensor, window_size: int) -> Tensor:
    """(B, H, W, C) with H, W multiples of window_size -> (B * num_windows, ws, ws, C), row-major windows."""
    B, H, W, C = x.shape
    x = x.view(B, H // window_size, window_size, W // window_size, window_size, C)
    return x.permute(0, 1, 3, 2, 4, 5).contiguous().view(-1, window_size, window_size, C)


def window_reverse(windows: Tensor, window_size: int, H: int, W: int) -> Tensor:
    """Inverse of ``window_partition``: (B * num_windows, ws, ws, C) -> (B, H, W, C)."""
    B = windows.shape[0] // ((H // window_size) * (W // window_size))
    x = windows.view(B, H // window_size, W // window_size, window_size, window_size, -1)
    return x.permute(0, 1, 3, 2, 4, 5).contiguous().view(B, H, W, -1)


def crop_tokens(x: Tensor, H: int, W: int) -> Tensor:
    """(B, Hp, Wp, C) -> (B, H * W, C): the top-left H x W tokens, gathered. A gather rather
    than a strided view: its layout does not depend on whether there was padding, so a
    program traced by torch.export holds for padded and unpadded sizes alike."""
    B, Hp, Wp, C = x.shape
    index = torch.arange(H, device=x.device)[:, None] * Wp + torch.arange(W, device=x.device)
    return x.reshape(B, Hp * Wp, C).index_select(1, index.flatten())


def relative_position_index(window_size: int) -> Tensor:
    """(ws*ws, ws*ws) int64: for tokens i, j of a window, the row of the bias table for their
    offset (dy, dx), i.e. (dy + ws - 1) * (2ws - 1) + (dx + ws - 1)."""
    coords = torch.stack(
        torch.meshgrid(torch.arange(window_size), torch.arange(window_size), indexing="ij")
    ).flatten(1)  # (2, ws*ws)
    relative = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0) + (window_size - 1)
    return relative[:, :, 0] * (2 * window_size - 1) + relative[:, :, 1]


def _shift_regions(size: int, window_size: int, shift_size: int, device=None) -> Tensor:
    """(size,) int64 along one axis of a shifted map: 0 before the last window, 1 in the last
    window up to the wrapped-around part, 2 in the last ``shift_size`` positions."""
    index = torch.arange(size, device=device)
    return (index >= size - window_size).long() + (index >= size - shift_size).long()


def shifted_window_attention_mask(Hp: int, Wp: int, window_size: int, shift_size: int, device=None) -> Tensor:
    """
    Additive attention mask of shifted windows: after the cyclic shift a window can hold
    pixels from up to four image regions that were not neighbours; attention between
    different regions gets -100.

    Returns:
        (num_windows, ws*ws, ws*ws) float32 with values 0 or -100.
    """
    rows = _shift_regions(Hp, window_size, shift_size, device)
    cols = _shift_regions(Wp, window_size, shift_size, device)
    img_mask = (3 * rows[:, None] + cols[None, :]).to(torch.float32)[None, :, :, None]  # (1, Hp, Wp, 1)
    mask_windows = window_partition(img_mask, window_size).view(-1, window_size * window_size)
    attn_mask = mask_windows.unsqueeze(1) - mask_windows.unsqueeze(2)
    return attn_mask.masked_fill(attn_mask != 0, -100.0).masked_fill(attn_mask == 0, 0.0)


class WindowAttention(nn.Module):
    """Multi-head self-attention inside a window with a learned relative position bias."""

    def __init__(
        self,
        dim: int,
        window_size: int,
        num_heads: int,
        qkv_bias: bool = True,
        qk_scale: Optional[float] = None,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
    ):
        super().__init__()
        self.dim = dim
        self.window_size = window_size
        self.num_heads = num_heads
        head_dim = dim // num_heads
        self.scale = qk_scale or head_dim**-0.5

        self.relative_position_bias_table = nn.Parameter(
            torch.zeros((2 * window_size - 1) * (2 * window_size - 1), num_heads)
        )
        self.register_buffer("relative_position_index", relative_position_index(window_size))

        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)

    def forward(self, x: Tensor, mask: Optional[Tensor] = None) -> Tensor:
        """
        Args:
            x: (num_windows * B, N, C) tokens, N = ws * ws.
            mask: (num_windows, N, N) additive mask (0 / -100) or None.
        """
        B_, N, C = x.shape
        qkv = self.qkv(x).reshape(B_, N, 3, self.num_heads, C // self.num_heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]  # (B_, heads, N, head_dim)

        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)]
        bias = bias.view(N, N, -1).permute(2, 0, 1).unsqueeze(0)  # (1, heads, N, N)
        if mask is not None:
            # Windows are batch-major: window w of every image gets mask[w]. `repeat` always
            # copies, where reshaping an expanded tensor would be a view for one image only.
            bias = (bias + mask[:, None]).repeat(B_ // mask.shape[0], 1, 1, 1)
        # softmax(q k^T * scale + bias) v, fused: several times faster on CPU than explicit matmuls.
        x = F.scaled_dot_product_attention(
            q,
            k,
            v,
            attn_mask=bias.to(q.dtype),
            dropout_p=self.attn_drop.p if self.training else 0.0,
            scale=self.scale,
        )
        x = x.transpose(1, 2).reshape(B_, N, C)
        return self.proj_drop(self.proj(x))


class SwinTransformerBlock(nn.Module):
    """(Shifted) window attention then MLP, both pre-norm with residual and stochastic depth."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        window_size: int = 7,
        shift_size: int = 0,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        qk_scale: Optional[float] = None,
        drop: float = 0.0,
        attn_drop: float = 0.0,
        drop_path: float = 0.0,
    ):
        super().__init__()
        if not 0 <= shift_size < window_size:
            raise ValueError(f"shift_size must be in [0, window_size={window_size}), got {shift_size}")
        self.dim = dim
        self.window_size = window_size
        self.shift_size = shift_size

        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, window_size, num_heads, qkv_bias, qk_scale, attn_drop, drop)
        # Stochastic depth zeroes the residual branch of whole samples ("row").
        self.drop_path = StochasticDepth(drop_path, "row") if drop_path > 0.0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop)

    def forward(self, x: Tensor, H: int, W: int, attn_mask: Optional[Tensor]) -> Tensor:
        """
        Args:
            x: (B, H * W, C).
            attn_mask: the shifted-window mask for the padded size (used when shifted).
        """
        B, L, C = x.shape
        if L != H * W:
            raise ValueError(f"SwinTransformerBlock: got {L} tokens for a {H}x{W} map")
        ws = self.window_size
        shortcut = x
        x = self.norm1(x).view(B, H, W, C)

        # Pad (after the norm, so padded tokens are zeros) to whole windows.
        Hp, Wp = ceil_to_multiple(H, ws), ceil_to_multiple(W, ws)
        x = F.pad(x, (0, 0, 0, Wp - W, 0, Hp - H))

        if self.shift_size > 0:
            x = torch.roll(x, shifts=(-self.shift_size, -self.shift_size), dims=(1, 2))
        else:
            attn_mask = None

        windows = window_partition(x, ws).view(-1, ws * ws, C)
        windows = self.attn(windows, mask=attn_mask).view(-1, ws, ws, C)
        x = window_reverse(windows, ws, Hp, Wp)

        if self.shift_size > 0:
            x = torch.roll(x, shifts=(self.shift_size, self.shift_size), dims=(1, 2))
        x = shortcut + self.drop_path(crop_tokens(x, H, W))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class PatchMerging(nn.Module):
    """Halves the resolution: concatenates each 2x2 neighbourhood (4C), LayerNorm, linear to 2C."""

    def __init__(self, dim: int):
        super().__init__()
        self.dim = dim
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)
        self.norm = nn.LayerNorm(4 * dim)

    def forward(self, x: Tensor, H: int, W: int) -> Tensor:
        """(B, H * W, C) -> (B, ceil(H/2) * ceil(W/2), 2C); odd sizes are zero-padded."""
        B, L, C = x.shape
        H2, W2 = ceil_div(H, 2), ceil_div(W, 2)
        x = F.pad(x.view(B, H, W, C), (0, 0, 0, 2 * W2 - W, 0, 2 * H2 - H))
        # (B, H2, dy, W2, dx, C) -> (B, H2 * W2, [dx, dy, C]): the neighbours in the order
        # top-left, bottom-left, top-right, bottom-right, the published weights' layout.
        x = x.view(B, H2, 2, W2, 2, C).permute(0, 1, 3, 4, 2, 5).reshape(B, H2 * W2, 4 * C)
        return self.reduction(self.norm(x))


class BasicLayer(nn.Module):
    """One Swin stage: ``depth`` blocks alternating regular and shifted windows, then an
    optional ``PatchMerging`` downsample."""

    def __init__(
        self,
        dim: int,
        depth: int,
        num_heads: int,
        window_size: int = 7,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        qk_scale: Optional[float] = None,
        drop: float = 0.0,
        attn_drop: float = 0.0,
        drop_path: Sequence[float] = (),
        downsample: bool = False,
        use_checkpoint: bool = False,
    ):
        super().__init__()
        self.window_size = window_size
        self.shift_size = window_size // 2
        self.depth = depth
        self.use_checkpoint = use_checkpoint
        drop_path = list(drop_path) if len(drop_path) else [0.0] * depth
        self.blocks = nn.ModuleList(
            SwinTransformerBlock(
                dim=dim,
                num_heads=num_heads,
                window_size=window_size,
                shift_size=0 if i % 2 == 0 else window_size // 2,
                mlp_ratio=mlp_ratio,
                qkv_bias=qkv_bias,
                qk_scale=qk_scale,
                drop=drop,
                attn_drop=attn_drop,
                drop_path=drop_path[i],
            )
            for i in range(depth)
        )
        self.downsample = PatchMerging(dim) if downsample else None

    def forward(self, x: Tensor, H: int, W: int) -> Tuple[Tensor, int, int, Tensor, int, int]:
        """
        Args:
            x: (B, H * W, C).

        Returns:
            the stage output (B, H * W, C) with H, W, and the downsampled input of the next
            stage with its size (the output itself when there is no downsample).
        """
        ws = self.window_size
        Hp, Wp = ceil_to_multiple(H, ws), ceil_to_multiple(W, ws)
        attn_mask = shifted_window_attention_mask(Hp, Wp, ws, self.shift_size, x.device).to(x.dtype)
        for blk in self.blocks:
            if self.use_checkpoint and self.training:
                x = checkpoint.checkpoint(blk, x, H, W, attn_mask, use_reentrant=False)
            else:
                x = blk(x, H, W, attn_mask)
        if self.downsample is None:
            return x, H, W, x, H, W
        return x, H, W, self.downsample(x, H, W), ceil_div(H, 2), ceil_div(W, 2)


class PatchEmbed(nn.Module):
    """Non-overlapping ``patch_size`` patches -> ``embed_dim`` channels (conv + optional LayerNorm)."""

    def __init__(self, patch_size: int = 4, in_chans: int = 3, embed_dim: int = 96, patch_norm: bool = True):
        super().__init__()
        self.patch_size = patch_size
        self.embed_dim = embed_dim
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)
        self.norm = nn.LayerNorm(embed_dim) if patch_norm else None

    def forward(self, x: Tensor) -> Tensor:
        """(B, C, H, W) -> (B, embed_dim, ceil(H/p), ceil(W/p)); H, W zero-padded to multiples of p."""
        _, _, H, W = x.shape
        p = self.patch_size
        x = self.proj(F.pad(x, (0, ceil_to_multiple(W, p) - W, 0, ceil_to_multiple(H, p) - H)))
        if self.norm is not None:
            Wh, Ww = x.shape[2], x.shape[3]
            x = self.norm(x.flatten(2).transpose(1, 2))
            x = x.transpose(1, 2).view(-1, self.embed_dim, Wh, Ww)
        return x


class SwinTransformer(nn.Module):
    """
    The hierarchical Swin Transformer: patch embedding, four stages at strides 4/8/16/32
    with ``embed_dim * 2**i`` channels, a LayerNorm (``norm{i}``) on each output stage.
    ``forward`` returns {"res2": ..., "res5": ...} as (B, C_i, H_i, W_i).
    """

    def __init__(
        self,
        pretrain_img_size: int = 224,
        patch_size: int = 4,
        in_chans: int = 3,
        embed_dim: int = 96,
        depths: Sequence[int] = (2, 2, 6, 2),
        num_heads: Sequence[int] = (3, 6, 12, 24),
        window_size: int = 7,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        qk_scale: Optional[float] = None,
        drop_rate: float = 0.0,
        attn_drop_rate: float = 0.0,
        drop_path_rate: float = 0.2,
        ape: bool = False,
        patch_norm: bool = True,
        out_indices: Sequence[int] = (0, 1, 2, 3),
        frozen_stages: int = -1,
        use_checkpoint: bool = False,
    ):
        super().__init__()
        if len(depths) != len(num_heads):
            raise ValueError(f"depths {list(depths)} and num_heads {list(num_heads)} must have the same length")
        self.pretrain_img_size = pretrain_img_size
        self.num_layers = len(depths)
        self.embed_dim = embed_dim
        self.ape = ape
        self.patch_norm = patch_norm
        self.out_indices = tuple(out_indices)
        self.frozen_stages = frozen_stages

        self.patch_embed = PatchEmbed(patch_size, in_chans, embed_dim, patch_norm)
        if ape:
            # Learned at the pretraining resolution, resized bicubically to the input at run time.
            grid = pretrain_img_size // patch_size
            self.absolute_pos_embed = nn.Parameter(torch.zeros(1, embed_dim, grid, grid))
            nn.init.trunc_normal_(self.absolute_pos_embed, std=0.02)
        self.pos_drop = nn.Dropout(p=drop_rate)

        # Stochastic depth grows linearly over all blocks.
        dpr = [x.item() for x in torch.linspace(0, drop_path_rate, sum(depths), device="cpu")]
        self.layers = nn.ModuleList()
        for i in range(self.num_layers):
            start = sum(depths[:i])
            self.layers.append(
                BasicLayer(
                    dim=int(embed_dim * 2**i),
                    depth=depths[i],
                    num_heads=num_heads[i],
                    window_size=window_size,
                    mlp_ratio=mlp_ratio,
                    qkv_bias=qkv_bias,
                    qk_scale=qk_scale,
                    drop=drop_rate,
                    attn_drop=attn_drop_rate,
                    drop_path=dpr[start : start + depths[i]],
                    downsample=i < self.num_layers - 1,
                    use_checkpoint=use_checkpoint,
                )
            )
        self.num_features = [int(embed_dim * 2**i) for i in range(self.num_layers)]
        for i in self.out_indices:
            self.add_module(f"norm{i}", nn.LayerNorm(self.num_features[i]))

        # Like the published model, Linear layers keep PyTorch's default init here (the weights
        # come from ImageNet pretraining); init_weights() applies the Swin paper's recipe.
        self._freeze_stages()

    def init_weights(self) -> None:
        """Swin's from-scratch init: truncated-normal (std 0.02) Linear weights, zero biases."""
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def _freeze_stages(self) -> None:
        frozen: List[nn.Module] = []
        if self.frozen_stages >= 0:
            frozen.append(self.patch_embed)
        if self.frozen_stages >= 1 and self.ape:
            self.absolute_pos_embed.requires_grad = False
        if self.frozen_stages >= 2:
            frozen.append(self.pos_drop)
            frozen.extend(self.layers[: self.frozen_stages - 1])
        for m in frozen:
            m.eval()
            for p in m.parameters():
                p.requires_grad = False

    def train(self, mode: bool = True):
        super().train(mode)
        self._freeze_stages()
        return self

    @property
    def min_export_side(self) -> int:
        """The smallest input side `mask2former.deploy` exports for: the last stage has two
        windows per axis. Below it a window count can be 1, and torch.export's program would
        hold either for that case or for the others, not both."""
        last_stride = self.patch_embed.patch_size * 2 ** (self.num_layers - 1)
        return last_stride * (self.layers[-1].window_size + 1)

    def forward(self, x: Tensor) -> Dict[str, Tensor]:
        """(B, 3, H, W) -> {"res{i+2}": (B, num_features[i], ceil(H / 2**(i+2)), ...)} for i in out_indices."""
        x = self.patch_embed(x)
        Wh, Ww = x.shape[2], x.shape[3]
        if self.ape:
            pos = F.interpolate(self.absolute_pos_embed, size=(Wh, Ww), mode="bicubic")
            x = x + pos
        x = self.pos_drop(x.flatten(2).transpose(1, 2))

        outs = {}
        for i, layer in enumerate(self.layers):
            x_out, H, W, x, Wh, Ww = layer(x, Wh, Ww)
            if i in self.out_indices:
                x_out = getattr(self, f"norm{i}")(x_out)
                outs[f"res{i + 2}"] = x_out.view(-1, H, W, self.num_features[i]).permute(0, 3, 1, 2).contiguous()
        return outs


@BACKBONE_REGISTRY.register()
class D2SwinTransformer(SwinTransformer, Backbone):
    """``SwinTransformer`` configured from ``cfg.MODEL.SWIN``, with detectron2's Backbone interface."""

    @configurable
    def __init__(
        self,
        *,
        pretrain_img_size: int = 224,
        patch_size: int = 4,
        in_chans: int = 3,
        embed_dim: int = 96,
        depths: Sequence[int] = (2, 2, 6, 2),
        num_heads: Sequence[int] = (3, 6, 12, 24),
        window_size: int = 7,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        qk_scale: Optional[float] = None,
        drop_rate: float = 0.0,
        attn_drop_rate: float = 0.0,
        drop_path_rate: float = 0.3,
        ape: bool = False,
        patch_norm: bool = True,
        use_checkpoint: bool = False,
        out_features: Sequence[str] = ("res2", "res3", "res4", "res5"),
    ):
        """Arguments are those of ``SwinTransformer``; ``out_features`` picks among res2..res5."""
        super().__init__(
            pretrain_img_size=pretrain_img_size,
            patch_size=patch_size,
            in_chans=in_chans,
            embed_dim=embed_dim,
            depths=depths,
            num_heads=num_heads,
            window_size=window_size,
            mlp_ratio=mlp_ratio,
            qkv_bias=qkv_bias,
            qk_scale=qk_scale,
            drop_rate=drop_rate,
            attn_drop_rate=attn_drop_rate,
            drop_path_rate=drop_path_rate,
            ape=ape,
            patch_norm=patch_norm,
            use_checkpoint=use_checkpoint,
        )
        names = [f"res{i + 2}" for i in range(self.num_layers)]
        unknown = [f for f in out_features if f not in names]
        if unknown:
            raise ValueError(f"MODEL.SWIN.OUT_FEATURES has {unknown}; this Swin outputs {names}")
        self._out_features = list(out_features)
        self._out_feature_strides = {name: patch_size * 2**i for i, name in enumerate(names)}
        self._out_feature_channels = {name: self.num_features[i] for i, name in enumerate(names)}

    @classmethod
    def from_config(cls, cfg, input_shape: Optional[ShapeSpec] = None):
        swin = cfg.MODEL.SWIN
        in_chans = 3 if input_shape is None or input_shape.channels is None else input_shape.channels
        return {
            "pretrain_img_size": swin.PRETRAIN_IMG_SIZE,
            "patch_size": swin.PATCH_SIZE,
            "in_chans": in_chans,
            "embed_dim": swin.EMBED_DIM,
            "depths": list(swin.DEPTHS),
            "num_heads": list(swin.NUM_HEADS),
            "window_size": swin.WINDOW_SIZE,
            "mlp_ratio": swin.MLP_RATIO,
            "qkv_bias": swin.QKV_BIAS,
            "qk_scale": swin.QK_SCALE,
            "drop_rate": swin.DROP_RATE,
            "attn_drop_rate": swin.ATTN_DROP_RATE,
            "drop_path_rate": swin.DROP_PATH_RATE,
            "ape": swin.APE,
            "patch_norm": swin.PATCH_NORM,
            "use_checkpoint": swin.USE_CHECKPOINT,
            "out_features": list(swin.OUT_FEATURES),
        }

    def forward(self, x: Tensor) -> Dict[str, Tensor]:
        """
        Args:
            x: (B, C, H, W) normalised images; any H, W.

        Returns:
            {name: (B, channels, ceil(H / stride), ceil(W / stride))} for the requested
            ``out_features`` (exact sizes when H, W are multiples of 32).
        """
        if x.dim() != 4:
            raise ValueError(f"D2SwinTransformer takes (B, C, H, W) images, got shape {tuple(x.shape)}")
        outputs = super().forward(x)
        return {k: v for k, v in outputs.items() if k in self._out_features}

    def output_shape(self) -> Dict[str, ShapeSpec]:
        return {
            name: ShapeSpec(channels=self._out_feature_channels[name], stride=self._out_feature_strides[name])
            for name in self._out_features
        }

    @property
    def size_divisibility(self) -> int:
        return 32
