"""Transformer decoders (``MODEL.MASK_FORMER.TRANSFORMER_DECODER_NAME``) and their building blocks."""
from .build import TRANSFORMER_DECODER_REGISTRY, build_transformer_decoder
from .masked_transformer_decoder import MultiScaleMaskedTransformerDecoder
from .position_encoding import PositionEmbeddingSine
from .standard_transformer_decoder import StandardTransformerDecoder

__all__ = [
    "TRANSFORMER_DECODER_REGISTRY",
    "build_transformer_decoder",
    "MultiScaleMaskedTransformerDecoder",
    "StandardTransformerDecoder",
    "PositionEmbeddingSine",
]
