"""``MSDeformAttnPixelDecoder``: Mask2Former's pixel decoder, a multi-scale deformable-attention
encoder over res3..res5 followed by one FPN step to stride 4."""
import math
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from detectron2.config import configurable
from detectron2.layers import Conv2d, ShapeSpec
from fvcore.nn import weight_init
from torch import Tensor, nn

from mask2former.ops import MSDeformAttn, onednn

from ..transformer_decoder.layers import get_activation_fn, xavier_uniform_matrices_
from ..transformer_decoder.position_encoding import PositionEmbeddingSine
from .build import PIXEL_DECODER_REGISTRY
from .features import check_features, select_input_shape
from .fpn import conv_norm

__all__ = [
    "MSDeformAttnEncoderLayer",
    "MSDeformAttnEncoder",
    "MSDeformAttnTransformerEncoderOnly",
    "MSDeformAttnPixelDecoder",
    "encoder_reference_points",
]


def encoder_reference_points(spatial_shapes: Sequence[Tuple[int, int]], num_levels: int, device=None) -> Tensor:
    """
    Reference points of the encoder tokens: the centre of each cell, ((j + 0.5) / W, (i + 0.5) / H)
    in normalised (x, y), row-major per level, levels concatenated; every token uses the same
    point on all levels (no padding, so valid ratios are 1).

    Returns:
        (1, S, num_levels, 2) float32, S = sum(H_l * W_l).
    """
    points = []
    for h, w in spatial_shapes:
        ref_y = (torch.arange(h, dtype=torch.float32, device=device) + 0.5) / h
        ref_x = (torch.arange(w, dtype=torch.float32, device=device) + 0.5) / w
        ref_y, ref_x = torch.meshgrid(ref_y, ref_x, indexing="ij")
        points.append(torch.stack((ref_x.reshape(-1), ref_y.reshape(-1)), -1))
    points = torch.cat(points, 0)  # (S, 2)
    return points[None, :, None, :].expand(1, -1, num_levels, 2)


class MSDeformAttnEncoderLayer(nn.Module):
    """Post-norm encoder layer: x = norm1(x + MSDeformAttn(x + pos, ref, x)); x = norm2(x + FFN(x))."""

    def __init__(
        self,
        d_model: int = 256,
        d_ffn: int = 1024,
        dropout: float = 0.1,
        activation: str = "relu",
        n_levels: int = 4,
        n_heads: int = 8,
        n_points: int = 4,
    ):
        super().__init__()
        self.self_attn = MSDeformAttn(d_model, n_levels, n_heads, n_points)
        self.dropout1 = nn.Dropout(dropout)
        self.norm1 = nn.LayerNorm(d_model)

        self.linear1 = nn.Linear(d_model, d_ffn)
        self.activation = get_activation_fn(activation)
        self.dropout2 = nn.Dropout(dropout)
        self.linear2 = nn.Linear(d_ffn, d_model)
        self.dropout3 = nn.Dropout(dropout)
        self.norm2 = nn.LayerNorm(d_model)

    def forward(
        self,
        src: Tensor,
        pos: Tensor,
        reference_points: Tensor,
        spatial_shapes: Tensor,
        level_start_index: Tensor,
        padding_mask: Optional[Tensor] = None,
    ) -> Tensor:
        """src, pos: (B, S, C); reference_points: (B, S, L, 2) -> (B, S, C)"""
        attended = self.self_attn(src + pos, reference_points, src, spatial_shapes, level_start_index, padding_mask)
        src = self.norm1(src + self.dropout1(attended))
        ffn = onednn.feed_forward(src, self.linear1, self.linear2, self.activation, self.dropout2)
        return self.norm2(src + self.dropout3(ffn))


class MSDeformAttnEncoder(nn.Module):
    """A stack of ``MSDeformAttnEncoderLayer`` (children ``layers.{i}``)."""

    def __init__(self, layers: List[MSDeformAttnEncoderLayer]):
        super().__init__()
        self.layers = nn.ModuleList(layers)
        self.num_layers = len(layers)

    def forward(
        self,
        src: Tensor,
        pos: Tensor,
        reference_points: Tensor,
        spatial_shapes: Tensor,
        level_start_index: Tensor,
        padding_mask: Optional[Tensor] = None,
    ) -> Tensor:
        """Arguments as for ``MSDeformAttnEncoderLayer.forward``."""
        output = src
        # Under autocast, positions in the dtype the layers compute in, cast once: every layer
        # adds them, and a float32 + bfloat16 sum takes PyTorch's slow mixed-dtype path.
        pos = pos.to(onednn.compute_dtype(src))
        for layer in self.layers:
            output = layer(output, pos, reference_points, spatial_shapes, level_start_index, padding_mask)
        return output


class MSDeformAttnTransformerEncoderOnly(nn.Module):
    """
    Flattens the projected multi-scale maps into one token sequence, adds sine positions
    plus a learned per-level embedding (``level_embed``), and runs the deformable encoder.
    """

    def __init__(
        self,
        d_model: int = 256,
        nhead: int = 8,
        num_encoder_layers: int = 6,
        dim_feedforward: int = 1024,
        dropout: float = 0.1,
        activation: str = "relu",
        num_feature_levels: int = 4,
        enc_n_points: int = 4,
    ):
        super().__init__()
        self.d_model = d_model
        self.nhead = nhead
        self.num_feature_levels = num_feature_levels
        self.encoder = MSDeformAttnEncoder(
            [
                MSDeformAttnEncoderLayer(
                    d_model, dim_feedforward, dropout, activation, num_feature_levels, nhead, enc_n_points
                )
                for _ in range(num_encoder_layers)
            ]
        )
        self.level_embed = nn.Parameter(torch.empty(num_feature_levels, d_model))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # Xavier for every matrix, then the deformable attentions' own init (zero offsets
        # weights, star-shaped offset biases, ...) on top of it.
        xavier_uniform_matrices_(self)
        for m in self.modules():
            if isinstance(m, MSDeformAttn):
                m.reset_parameters()
        nn.init.normal_(self.level_embed)

    def forward(self, srcs: List[Tensor], pos_embeds: List[Tensor]) -> Tuple[Tensor, Tensor, Tensor]:
        """
        Args:
            srcs: ``num_feature_levels`` maps (B, C, H_l, W_l).
            pos_embeds: their positional encodings, same shapes.

        Returns:
            memory (B, S, C), spatial_shapes (L, 2) int64 (H_l, W_l), level_start_index (L,) int64.
        """
        if len(srcs) != self.num_feature_levels:
            raise ValueError(f"expected {self.num_feature_levels} feature levels, got {len(srcs)}")
        shapes = [tuple(src.shape[-2:]) for src in srcs]
        # (B, C, H, W) -> (B, H * W, C) through permute: a view for channels-last maps.
        src_flatten = torch.cat([src.permute(0, 2, 3, 1).flatten(1, 2) for src in srcs], 1)
        pos_flatten = torch.cat(
            [pos.permute(0, 2, 3, 1).flatten(1, 2) + self.level_embed[lvl].view(1, 1, -1) for lvl, pos in enumerate(pos_embeds)],
            1,
        )
        device = src_flatten.device
        # One scalar tensor per size rather than torch.as_tensor(shapes), which torch.export
        # would bake in as the example input's sizes instead of keeping them symbolic.
        spatial_shapes = torch.stack(
            [torch.full((), size, dtype=torch.long, device=device) for shape in shapes for size in shape]
        ).view(-1, 2)
        level_start_index = torch.cat((spatial_shapes.new_zeros((1,)), spatial_shapes.prod(1).cumsum(0)[:-1]))
        reference_points = encoder_reference_points(shapes, self.num_feature_levels, device)
        reference_points = reference_points.expand(src_flatten.shape[0], -1, -1, -1)
        memory = self.encoder(src_flatten, pos_flatten, reference_points, spatial_shapes, level_start_index)
        return memory, spatial_shapes, level_start_index


@PIXEL_DECODER_REGISTRY.register()
class MSDeformAttnPixelDecoder(nn.Module):
    """
    res3..res5 (``transformer_in_features``) are projected to ``conv_dim`` (1x1 conv + GroupNorm)
    and refined jointly by the deformable encoder; the finer input features (res2) are added
    by FPN steps (lateral ``adapter_i`` + bilinear upsampling + 3x3 ``layer_i``).
    ``mask_features`` is a 1x1 conv of the stride-``common_stride`` map.
    """

    @configurable
    def __init__(
        self,
        input_shape: Dict[str, ShapeSpec],
        *,
        transformer_dropout: float,
        transformer_nheads: int,
        transformer_dim_feedforward: int,
        transformer_enc_layers: int,
        conv_dim: int,
        mask_dim: int,
        norm: Optional[str] = None,
        transformer_in_features: List[str],
        common_stride: int,
        transformer_n_points: int = 4,
    ):
        """
        Args:
            input_shape: shapes of all input features (res2..res5).
            transformer_dropout, transformer_nheads, transformer_dim_feedforward,
            transformer_enc_layers, transformer_n_points: deformable encoder settings.
            conv_dim: encoder / FPN width.
            mask_dim: channels of ``mask_features``.
            norm: normalisation of the FPN convs.
            transformer_in_features: features fed to the encoder (res3, res4, res5).
            common_stride: stride of ``mask_features``.
        """
        super().__init__()
        transformer_input_shape = select_input_shape(input_shape, transformer_in_features, "transformer_in_features")
        input_shape = sorted(input_shape.items(), key=lambda kv: kv[1].stride)
        self.in_features = [k for k, _ in input_shape]  # finest first
        self.input_shape = dict(input_shape)
        self.transformer_in_features = list(transformer_input_shape)  # finest first
        self._build_encoder(
            [v.channels for v in transformer_input_shape.values()],
            conv_dim,
            dropout=transformer_dropout,
            nheads=transformer_nheads,
            dim_feedforward=transformer_dim_feedforward,
            enc_layers=transformer_enc_layers,
            n_points=transformer_n_points,
        )

        self.mask_dim = mask_dim
        self.mask_features = Conv2d(conv_dim, mask_dim, kernel_size=1, stride=1, padding=0)
        weight_init.c2_xavier_fill(self.mask_features)

        self.maskformer_num_feature_levels = 3  # the transformer decoder always uses three scales
        self.common_stride = common_stride
        # One FPN step per octave between the finest encoder level and common_stride.
        min_stride = min(v.stride for v in transformer_input_shape.values())
        self.num_fpn_levels = int(math.log2(min_stride) - math.log2(common_stride))
        if self.num_fpn_levels < 0 or self.num_fpn_levels > len(self.in_features) - len(self.transformer_in_features):
            raise ValueError(
                f"common_stride={common_stride} cannot be reached from encoder stride {min_stride} "
                f"with input features {self.in_features}"
            )
        self._build_fpn([v.channels for _, v in input_shape[: self.num_fpn_levels]], conv_dim, norm)

    def _build_encoder(
        self, in_channels: List[int], conv_dim: int, *, dropout, nheads, dim_feedforward, enc_layers, n_points
    ) -> None:
        """``input_proj`` (1x1 conv + GroupNorm per encoder input, finest first in
        `in_channels`), the deformable encoder ``transformer`` and its sine positions."""
        # Encoder inputs are processed coarsest first, so input_proj.0 is res5's projection.
        self.input_proj = nn.ModuleList(
            nn.Sequential(nn.Conv2d(channels, conv_dim, kernel_size=1), nn.GroupNorm(32, conv_dim))
            for channels in in_channels[::-1]
        )
        for proj in self.input_proj:
            nn.init.xavier_uniform_(proj[0].weight, gain=1)
            nn.init.constant_(proj[0].bias, 0)
        self.transformer = MSDeformAttnTransformerEncoderOnly(
            d_model=conv_dim,
            dropout=dropout,
            nhead=nheads,
            dim_feedforward=dim_feedforward,
            num_encoder_layers=enc_layers,
            num_feature_levels=len(in_channels),
            enc_n_points=n_points,
        )
        self.pe_layer = PositionEmbeddingSine(conv_dim // 2, normalize=True)

    def _build_fpn(self, in_channels: List[int], conv_dim: int, norm: str) -> None:
        """One lateral ``adapter_i`` and output ``layer_i`` per FPN input, finest first in
        `in_channels` (the published module names); kept coarsest first, the order
        forward_features walks them in."""
        lateral_convs, output_convs = [], []
        for idx, channels in enumerate(in_channels):
            lateral_conv = conv_norm(channels, conv_dim, 1, norm, relu=False, xavier_init=False)
            output_conv = conv_norm(conv_dim, conv_dim, 3, norm, relu=True, xavier_init=False)
            # Initialised after both are built: the order seeded runs draw their weights in.
            weight_init.c2_xavier_fill(lateral_conv)
            weight_init.c2_xavier_fill(output_conv)
            self.add_module(f"adapter_{idx + 1}", lateral_conv)
            self.add_module(f"layer_{idx + 1}", output_conv)
            lateral_convs.append(lateral_conv)
            output_convs.append(output_conv)
        self.lateral_convs = lateral_convs[::-1]
        self.output_convs = output_convs[::-1]

    @classmethod
    def from_config(cls, cfg, input_shape: Dict[str, ShapeSpec]):
        head = cfg.MODEL.SEM_SEG_HEAD
        return {
            "input_shape": select_input_shape(input_shape, head.IN_FEATURES, "MODEL.SEM_SEG_HEAD.IN_FEATURES"),
            "conv_dim": head.CONVS_DIM,
            "mask_dim": head.MASK_DIM,
            "norm": head.NORM,
            "transformer_dropout": cfg.MODEL.MASK_FORMER.DROPOUT,
            # The published model uses the decoder's head count for the encoder too.
            "transformer_nheads": cfg.MODEL.MASK_FORMER.NHEADS,
            # The deformable encoder's FFN is 1024 wide whatever DIM_FEEDFORWARD says.
            "transformer_dim_feedforward": 1024,
            "transformer_enc_layers": head.TRANSFORMER_ENC_LAYERS,
            "transformer_in_features": list(head.DEFORMABLE_TRANSFORMER_ENCODER_IN_FEATURES),
            "transformer_n_points": head.DEFORMABLE_TRANSFORMER_ENCODER_N_POINTS,
            "common_stride": head.COMMON_STRIDE,
        }

    def forward_features(self, features: Dict[str, Tensor]) -> Tuple[Tensor, Tensor, List[Tensor]]:
        """
        Args:
            features: backbone features by name, (B, C_f, H_f, W_f).

        Returns:
            mask_features: (B, mask_dim, H/common_stride, W/common_stride).
            the encoder output at the coarsest level: (B, conv_dim, H/32, W/32).
            multi_scale_features: three (B, conv_dim, h, w) maps, coarsest first.
        """
        check_features(features, self.input_shape, type(self).__name__)
        # The deformable encoder trains in float32 under float16 mixed precision (as
        # published: float16's range is narrow); bfloat16 has float32's range and the op
        # accumulates its gradients in float32, so under bfloat16 autocast it trains in
        # bfloat16. At inference it follows the autocast dtype (MASK2FORMER.INFERENCE_DTYPE).
        device_type = next(iter(features.values())).device.type
        autocast_dtype = torch.get_autocast_dtype(device_type)
        enabled = torch.is_autocast_enabled(device_type) and (not self.training or autocast_dtype == torch.bfloat16)
        with torch.autocast(device_type, dtype=autocast_dtype, enabled=enabled):
            return self._forward_features(features)

    def _forward_features(self, features: Dict[str, Tensor]) -> Tuple[Tensor, Tensor, List[Tensor]]:
        # float32 inputs where no autocast would cast them (e.g. half-precision backbone
        # features while the encoder trains in float32); under autocast they stay as they are.
        as_input = (lambda x: x) if torch.is_autocast_enabled(next(iter(features.values())).device.type) else Tensor.float
        srcs, pos = [], []
        for level, name in enumerate(self.transformer_in_features[::-1]):
            x = as_input(features[name])
            srcs.append(self.input_proj[level](x))
            pos.append(self.pe_layer(x))
        memory, _, _ = self.transformer(srcs, pos)

        # Split the token sequence back into one (B, C, H_l, W_l) map per level.
        batch_size = memory.shape[0]
        shapes = [tuple(src.shape[-2:]) for src in srcs]
        tokens = torch.split(memory, [h * w for h, w in shapes], dim=1)
        # Channels-last views of the tokens: no copy.
        out = [t.reshape(batch_size, h, w, -1).permute(0, 3, 1, 2) for t, (h, w) in zip(tokens, shapes)]

        for idx, name in enumerate(self.in_features[: self.num_fpn_levels][::-1]):
            cur_fpn = self.lateral_convs[idx](as_input(features[name]))
            y = cur_fpn + F.interpolate(out[-1], size=cur_fpn.shape[-2:], mode="bilinear", align_corners=False)
            out.append(self.output_convs[idx](y))

        multi_scale_features = out[: self.maskformer_num_feature_levels]
        # contiguous: the transformer decoder multiplies it by the queries ten times
        return onednn.pointwise_conv_contiguous(out[-1], self.mask_features), out[0], multi_scale_features

    def forward(self, features: Dict[str, Tensor], targets=None):
        raise NotImplementedError(
            "MSDeformAttnPixelDecoder is used through forward_features() by MaskFormerHead; call that instead"
        )
