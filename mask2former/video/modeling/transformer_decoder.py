"""``VideoMultiScaleMaskedTransformerDecoder``: the masked-attention decoder over whole clips."""
from typing import Dict, List, Optional

from detectron2.config import configurable
from torch import Tensor

from ...modeling.transformer_decoder import TRANSFORMER_DECODER_REGISTRY, MultiScaleMaskedTransformerDecoder
from ...ops import onednn
from .position_encoding import PositionEmbeddingSine3D

__all__ = ["VideoMultiScaleMaskedTransformerDecoder"]


@TRANSFORMER_DECODER_REGISTRY.register()
class VideoMultiScaleMaskedTransformerDecoder(MultiScaleMaskedTransformerDecoder):
    """
    `MultiScaleMaskedTransformerDecoder` whose queries are shared by the T frames of a clip:
    each level's memory is the clip's T * h * w pixels with a 3-D sine position embedding,
    masked attention uses the previous prediction's masks of every frame, and each query
    predicts one mask per frame. Same parameters (and checkpoint keys) as the image decoder.

    In training the input holds B clips of ``num_frames`` frames each; in inference it holds
    one clip of any length.
    """

    @configurable
    def __init__(self, in_channels: int, mask_classification: bool = True, *, num_frames: int, **kwargs):
        """
        Args:
            num_frames: frames per training clip (``INPUT.SAMPLING_FRAME_NUM``).
            in_channels, mask_classification, kwargs: as `MultiScaleMaskedTransformerDecoder`.
        """
        super().__init__(in_channels, mask_classification, **kwargs)
        if num_frames < 1:
            raise ValueError(f"VideoMultiScaleMaskedTransformerDecoder: num_frames must be >= 1, got {num_frames}")
        self.num_frames = num_frames
        self.pe_layer = PositionEmbeddingSine3D(self.pe_layer.num_pos_feats, normalize=True)

    @classmethod
    def from_config(cls, cfg, in_channels, mask_classification):
        args = super().from_config(cfg, in_channels, mask_classification)
        args["num_frames"] = cfg.INPUT.SAMPLING_FRAME_NUM
        return args

    def forward(self, x: List[Tensor], mask_features: Tensor, mask: Optional[Tensor] = None) -> Dict:
        """
        Args:
            x: ``num_feature_levels`` maps (B * T, in_channels, H_l, W_l), lowest resolution
                first, the T frames of each clip consecutive.
            mask_features: (B * T, mask_dim, H/4, W/4) per-pixel embeddings.
            mask: unused (kept for the common decoder interface).

        Returns:
            {"pred_logits": (B, Q, K+1), "pred_masks": (B, Q, T, H/4, W/4)}, in training also
            "aux_outputs": [{"pred_logits", "pred_masks"}] * dec_layers (earlier predictions, in order).
        """
        del mask
        self._check_inputs(x, mask_features)
        num_images = mask_features.shape[0]
        if self.training:
            if num_images % self.num_frames:
                raise ValueError(
                    f"{type(self).__name__}: {num_images} frames are not clips of "
                    f"INPUT.SAMPLING_FRAME_NUM={self.num_frames} frames"
                )
            num_frames = self.num_frames
        else:
            num_frames = num_images  # one clip per call
        mask_features = mask_features.view(num_images // num_frames, num_frames, *mask_features.shape[1:])
        memories, positions, sizes = self._memories(x, num_frames)
        return self._decode(memories, positions, sizes, mask_features)

    def _position_embedding(self, feature: Tensor, num_frames: int) -> Tensor:
        """(B * T, C, h, w) -> (B * T, C, h * w) 3-D positional embedding of each clip."""
        clips = feature.view(-1, num_frames, *feature.shape[1:])
        return self.pe_layer(clips, None).flatten(3).flatten(0, 1)

    @staticmethod
    def _mask_logits(mask_embed: Tensor, mask_features: Tensor) -> Tensor:
        """(B, Q, C) query embeddings and (B, T, C, H, W) pixel embeddings -> (B, Q, T, H, W)."""
        return onednn.clip_mask_logits(mask_embed, mask_features)
