"""``MaskFormerHead``: pixel decoder + transformer decoder, registered as a detectron2 SEM_SEG_HEAD."""
from typing import Dict, Optional

from detectron2.config import configurable
from detectron2.layers import ShapeSpec
from detectron2.modeling import SEM_SEG_HEADS_REGISTRY
from torch import Tensor, nn

from ..pixel_decoder.build import build_pixel_decoder
from ..pixel_decoder.features import select_input_shape
from ..transformer_decoder.build import build_transformer_decoder
from ..transformer_decoder.legacy_keys import rename_legacy_keys

__all__ = ["MaskFormerHead"]

# TRANSFORMER_IN_FEATURE values that name a pixel-decoder output rather than a backbone feature.
_MULTI_SCALE = "multi_scale_pixel_decoder"
_ENCODER = "transformer_encoder"
_PIXEL_EMBEDDING = "pixel_embedding"


@SEM_SEG_HEADS_REGISTRY.register()
class MaskFormerHead(nn.Module):
    """
    Runs the pixel decoder (``pixel_decoder``) on the backbone features, then the transformer
    decoder (``predictor``) on the feature chosen by ``transformer_in_feature``:
    "multi_scale_pixel_decoder" (the three multi-scale maps, Mask2Former),
    "transformer_encoder" (the pixel decoder's encoder output), "pixel_embedding"
    (``mask_features``) or a backbone feature name (MaskFormer).
    """

    # Version 2 = pixel-decoder weights under ``pixel_decoder.``; checkpoints written by this
    # module carry it.
    _version = 2

    @configurable
    def __init__(
        self,
        input_shape: Dict[str, ShapeSpec],
        *,
        num_classes: int,
        pixel_decoder: nn.Module,
        loss_weight: float = 1.0,
        ignore_value: int = -1,
        transformer_predictor: nn.Module,
        transformer_in_feature: str,
    ):
        """
        Args:
            input_shape: shapes of the backbone features the head uses.
            num_classes: K.
            pixel_decoder: has ``forward_features(features)``.
            loss_weight: kept for detectron2's SEM_SEG_HEAD interface.
            ignore_value: label ignored in semantic targets.
            transformer_predictor: the transformer decoder.
            transformer_in_feature: what the transformer decoder reads (see class doc).
        """
        super().__init__()
        input_shape = sorted(input_shape.items(), key=lambda kv: kv[1].stride)
        self.in_features = [k for k, _ in input_shape]
        self.ignore_value = ignore_value
        self.common_stride = 4
        self.loss_weight = loss_weight

        self.pixel_decoder = pixel_decoder
        self.predictor = transformer_predictor
        self.transformer_in_feature = transformer_in_feature
        self.num_classes = num_classes

    @classmethod
    def from_config(cls, cfg, input_shape: Dict[str, ShapeSpec]):
        head = cfg.MODEL.SEM_SEG_HEAD
        head_input_shape = select_input_shape(input_shape, head.IN_FEATURES, "MODEL.SEM_SEG_HEAD.IN_FEATURES")
        transformer_in_feature = cfg.MODEL.MASK_FORMER.TRANSFORMER_IN_FEATURE
        if transformer_in_feature in (_ENCODER, _MULTI_SCALE):
            predictor_in_channels = head.CONVS_DIM
        elif transformer_in_feature == _PIXEL_EMBEDDING:
            predictor_in_channels = head.MASK_DIM
        elif transformer_in_feature in input_shape:
            predictor_in_channels = input_shape[transformer_in_feature].channels
        else:
            raise ValueError(
                f"MODEL.MASK_FORMER.TRANSFORMER_IN_FEATURE={transformer_in_feature!r} is neither one of "
                f"{[_MULTI_SCALE, _ENCODER, _PIXEL_EMBEDDING]} nor a backbone feature {sorted(input_shape)}"
            )
        return {
            "input_shape": head_input_shape,
            "ignore_value": head.IGNORE_VALUE,
            "num_classes": head.NUM_CLASSES,
            "pixel_decoder": build_pixel_decoder(cfg, input_shape),
            "loss_weight": head.LOSS_WEIGHT,
            "transformer_in_feature": transformer_in_feature,
            "transformer_predictor": build_transformer_decoder(cfg, predictor_in_channels, mask_classification=True),
        }

    def forward(self, features: Dict[str, Tensor], mask: Optional[Tensor] = None) -> Dict:
        """
        Args:
            features: backbone features by name, (B, C_f, H_f, W_f).
            mask: optional (B, H, W) bool padding mask, used by MaskFormer-style decoders.

        Returns:
            {"pred_logits": (B, Q, K+1), "pred_masks": (B, Q, H/4, W/4),
             "aux_outputs": [{"pred_logits", "pred_masks"}, ...] one per earlier layer, in order}
        """
        return self.layers(features, mask)

    def layers(self, features: Dict[str, Tensor], mask: Optional[Tensor] = None) -> Dict:
        mask_features, transformer_encoder_features, multi_scale_features = self.pixel_decoder.forward_features(
            features
        )
        if self.transformer_in_feature == _MULTI_SCALE:
            return self.predictor(multi_scale_features, mask_features, mask)
        if self.transformer_in_feature == _ENCODER:
            if transformer_encoder_features is None:
                raise ValueError(
                    "MODEL.MASK_FORMER.TRANSFORMER_IN_FEATURE='transformer_encoder' needs a pixel decoder with a "
                    f"transformer encoder; {type(self.pixel_decoder).__name__} has none"
                )
            return self.predictor(transformer_encoder_features, mask_features, mask)
        if self.transformer_in_feature == _PIXEL_EMBEDDING:
            return self.predictor(mask_features, mask_features, mask)
        return self.predictor(features[self.transformer_in_feature], mask_features, mask)

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs):
        # MaskFormer-era checkpoints stored the pixel decoder's weights directly under the
        # head. Only keys that belong to neither child are moved; current keys stay as they are.
        children = tuple(name + "." for name in self._modules)
        rename_legacy_keys(state_dict, prefix, lambda k: None if k.startswith(children) else "pixel_decoder." + k)
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )
