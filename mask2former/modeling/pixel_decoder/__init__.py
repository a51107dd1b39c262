"""Pixel decoders (``MODEL.SEM_SEG_HEAD.PIXEL_DECODER_NAME``)."""
from .build import PIXEL_DECODER_REGISTRY, build_pixel_decoder
from .fpn import BasePixelDecoder, TransformerEncoderPixelDecoder
from .msdeformattn import MSDeformAttnPixelDecoder

__all__ = [
    "PIXEL_DECODER_REGISTRY",
    "build_pixel_decoder",
    "BasePixelDecoder",
    "TransformerEncoderPixelDecoder",
    "MSDeformAttnPixelDecoder",
]
