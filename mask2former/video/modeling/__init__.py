"""Video model components; importing this package registers them with detectron2."""
from .criterion import VideoSetCriterion
from .matcher import VideoHungarianMatcher
from .position_encoding import PositionEmbeddingSine3D
from .transformer_decoder import VideoMultiScaleMaskedTransformerDecoder  # registers the TRANSFORMER_DECODER
from .video_maskformer import VideoMaskFormer  # registers the META_ARCH

__all__ = [
    "PositionEmbeddingSine3D",
    "VideoHungarianMatcher",
    "VideoMaskFormer",
    "VideoMultiScaleMaskedTransformerDecoder",
    "VideoSetCriterion",
]
