"""MaskFormer's FPN pixel decoders: ``BasePixelDecoder`` and ``TransformerEncoderPixelDecoder``."""
from typing import Dict, List, Optional, Tuple

import torch.nn.functional as F
from detectron2.config import configurable
from detectron2.layers import Conv2d, ShapeSpec, get_norm
from fvcore.nn import weight_init
from torch import Tensor, nn

from ..transformer_decoder.detr_transformer import TransformerEncoderOnly
from ..transformer_decoder.position_encoding import PositionEmbeddingSine
from .build import PIXEL_DECODER_REGISTRY
from .features import check_features, select_input_shape

__all__ = ["BasePixelDecoder", "TransformerEncoderPixelDecoder", "conv_norm"]


def conv_norm(
    in_channels: int, out_channels: int, kernel_size: int, norm: str, relu: bool, xavier_init: bool = True
) -> Conv2d:
    """Stride-1 "same" conv (+ norm) (+ ReLU), no bias when followed by a norm; Caffe2-Xavier
    initialised unless `xavier_init` is False (for a caller that initialises later)."""
    conv = Conv2d(
        in_channels,
        out_channels,
        kernel_size=kernel_size,
        stride=1,
        padding=kernel_size // 2,
        bias=(norm == ""),
        norm=get_norm(norm, out_channels),
        activation=F.relu if relu else None,
    )
    if xavier_init:
        weight_init.c2_xavier_fill(conv)
    return conv


@PIXEL_DECODER_REGISTRY.register()
class BasePixelDecoder(nn.Module):
    """
    A top-down FPN over the input features: the lowest-resolution feature goes through a
    3x3 conv; every other one gets a 1x1 lateral conv (``adapter_i``), the nearest-upsampled
    coarser output added, and a 3x3 conv (``layer_i``). ``mask_features`` is a 3x3 conv of
    the finest output. The first three outputs (coarsest first) are the multi-scale features.
    """

    @configurable
    def __init__(self, input_shape: Dict[str, ShapeSpec], *, conv_dim: int, mask_dim: int, norm: str = ""):
        """
        Args:
            input_shape: shapes of the input features (any order).
            conv_dim: FPN width.
            mask_dim: channels of ``mask_features``.
            norm: normalisation of the FPN convs ("" for none, "GN", ...).
        """
        super().__init__()
        self._build_fpn(input_shape, conv_dim, mask_dim, norm, top_in_channels=None)

    def _build_fpn(
        self,
        input_shape: Dict[str, ShapeSpec],
        conv_dim: int,
        mask_dim: int,
        norm: str,
        top_in_channels: Optional[int],
    ) -> None:
        input_shape = sorted(input_shape.items(), key=lambda kv: kv[1].stride)
        self.in_features = [k for k, _ in input_shape]
        self.input_shape = dict(input_shape)
        feature_channels = [v.channels for _, v in input_shape]
        self.conv_dim = conv_dim
        self.mask_dim = mask_dim
        self.maskformer_num_feature_levels = 3

        # Module names follow the finest-first order of the published checkpoints
        # (adapter_1/layer_1 = res2, ...); the lists below are kept coarsest first.
        lateral_convs: List[Optional[nn.Module]] = []
        output_convs: List[nn.Module] = []
        for idx, in_channels in enumerate(feature_channels):
            if idx == len(feature_channels) - 1:
                top_in = in_channels if top_in_channels is None else top_in_channels
                output_conv = conv_norm(top_in, conv_dim, 3, norm, relu=True)
                self.add_module(f"layer_{idx + 1}", output_conv)
                lateral_convs.append(None)
            else:
                lateral_conv = conv_norm(in_channels, conv_dim, 1, norm, relu=False)
                output_conv = conv_norm(conv_dim, conv_dim, 3, norm, relu=True)
                self.add_module(f"adapter_{idx + 1}", lateral_conv)
                self.add_module(f"layer_{idx + 1}", output_conv)
                lateral_convs.append(lateral_conv)
            output_convs.append(output_conv)
        self.lateral_convs = lateral_convs[::-1]
        self.output_convs = output_convs[::-1]

        self.mask_features = Conv2d(conv_dim, mask_dim, kernel_size=3, stride=1, padding=1)
        weight_init.c2_xavier_fill(self.mask_features)

    @classmethod
    def from_config(cls, cfg, input_shape: Dict[str, ShapeSpec]):
        return {
            "input_shape": select_input_shape(input_shape, cfg.MODEL.SEM_SEG_HEAD.IN_FEATURES, "MODEL.SEM_SEG_HEAD.IN_FEATURES"),
            "conv_dim": cfg.MODEL.SEM_SEG_HEAD.CONVS_DIM,
            "mask_dim": cfg.MODEL.SEM_SEG_HEAD.MASK_DIM,
            "norm": cfg.MODEL.SEM_SEG_HEAD.NORM,
        }

    def _top_level(self, x: Tensor) -> Tuple[Tensor, Optional[Tensor]]:
        """Output of the coarsest level and the transformer-encoder features (None here)."""
        return self.output_convs[0](x), None

    def forward_features(self, features: Dict[str, Tensor]) -> Tuple[Tensor, Optional[Tensor], List[Tensor]]:
        """
        Args:
            features: backbone features by name, (B, C_f, H_f, W_f).

        Returns:
            mask_features (B, mask_dim, H_finest, W_finest), the transformer-encoder output
            (None for this class), and up to three FPN outputs (B, conv_dim, ...) coarsest first.
        """
        check_features(features, self.input_shape, type(self).__name__)
        multi_scale_features: List[Tensor] = []
        transformer_encoder_features = None
        y = None
        for idx, name in enumerate(self.in_features[::-1]):
            x = features[name]
            if idx == 0:
                y, transformer_encoder_features = self._top_level(x)
            else:
                cur_fpn = self.lateral_convs[idx](x)
                # Nearest upsampling, as in MaskFormer's FPN.
                y = cur_fpn + F.interpolate(y, size=cur_fpn.shape[-2:], mode="nearest")
                y = self.output_convs[idx](y)
            if len(multi_scale_features) < self.maskformer_num_feature_levels:
                multi_scale_features.append(y)
        return self.mask_features(y), transformer_encoder_features, multi_scale_features

    def forward(self, features: Dict[str, Tensor], targets=None):
        raise NotImplementedError(
            f"{type(self).__name__} is used through forward_features() by MaskFormerHead; call that instead"
        )


@PIXEL_DECODER_REGISTRY.register()
class TransformerEncoderPixelDecoder(BasePixelDecoder):
    """
    ``BasePixelDecoder`` whose coarsest feature first goes through a 1x1 projection
    (``input_proj``) and a DETR transformer encoder (``transformer``) with sine positions;
    the encoder output is also returned as the transformer-encoder features.
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
        transformer_pre_norm: bool,
        conv_dim: int,
        mask_dim: int,
        norm: str = "",
    ):
        """
        Args:
            input_shape, conv_dim, mask_dim, norm: as for ``BasePixelDecoder``.
            transformer_*: settings of the encoder run on the coarsest feature.
        """
        nn.Module.__init__(self)
        coarsest = max(input_shape.values(), key=lambda s: s.stride)
        self._build_fpn(input_shape, conv_dim, mask_dim, norm, top_in_channels=conv_dim)

        self.input_proj = Conv2d(coarsest.channels, conv_dim, kernel_size=1)
        weight_init.c2_xavier_fill(self.input_proj)
        self.transformer = TransformerEncoderOnly(
            d_model=conv_dim,
            dropout=transformer_dropout,
            nhead=transformer_nheads,
            dim_feedforward=transformer_dim_feedforward,
            num_encoder_layers=transformer_enc_layers,
            normalize_before=transformer_pre_norm,
        )
        self.pe_layer = PositionEmbeddingSine(conv_dim // 2, normalize=True)

    @classmethod
    def from_config(cls, cfg, input_shape: Dict[str, ShapeSpec]):
        ret = super().from_config(cfg, input_shape)
        ret["transformer_dropout"] = cfg.MODEL.MASK_FORMER.DROPOUT
        ret["transformer_nheads"] = cfg.MODEL.MASK_FORMER.NHEADS
        ret["transformer_dim_feedforward"] = cfg.MODEL.MASK_FORMER.DIM_FEEDFORWARD
        ret["transformer_enc_layers"] = cfg.MODEL.SEM_SEG_HEAD.TRANSFORMER_ENC_LAYERS
        ret["transformer_pre_norm"] = cfg.MODEL.MASK_FORMER.PRE_NORM
        return ret

    def _top_level(self, x: Tensor) -> Tuple[Tensor, Optional[Tensor]]:
        encoded = self.transformer(self.input_proj(x), None, self.pe_layer(x))
        return self.output_convs[0](encoded), encoded
