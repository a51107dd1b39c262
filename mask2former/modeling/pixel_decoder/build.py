"""Registry of pixel decoders (``MODEL.SEM_SEG_HEAD.PIXEL_DECODER_NAME``)."""
from typing import Dict

from detectron2.layers import ShapeSpec
from detectron2.modeling import SEM_SEG_HEADS_REGISTRY
from detectron2.utils.registry import Registry

__all__ = ["PIXEL_DECODER_REGISTRY", "build_pixel_decoder"]

PIXEL_DECODER_REGISTRY = Registry("PIXEL_DECODER")
PIXEL_DECODER_REGISTRY.__doc__ = """
Pixel decoders turn backbone features into per-pixel embeddings. A registered class is
called as ``cls(cfg, input_shape)`` and has
``forward_features(features) -> (mask_features, transformer_encoder_features or None,
multi_scale_features)``.
"""


def build_pixel_decoder(cfg, input_shape: Dict[str, ShapeSpec]):
    """
    Build ``cfg.MODEL.SEM_SEG_HEAD.PIXEL_DECODER_NAME``. Names are looked up in
    ``PIXEL_DECODER_REGISTRY`` first, then in detectron2's ``SEM_SEG_HEADS_REGISTRY``,
    where pixel decoders written for the original code base register themselves.
    """
    name = cfg.MODEL.SEM_SEG_HEAD.PIXEL_DECODER_NAME
    if name in PIXEL_DECODER_REGISTRY:
        decoder = PIXEL_DECODER_REGISTRY.get(name)(cfg, input_shape)
    elif name in SEM_SEG_HEADS_REGISTRY:
        decoder = SEM_SEG_HEADS_REGISTRY.get(name)(cfg, input_shape)
    else:
        raise KeyError(
            f"MODEL.SEM_SEG_HEAD.PIXEL_DECODER_NAME={name!r} is not a registered pixel decoder; "
            f"known: {sorted(k for k, _ in PIXEL_DECODER_REGISTRY)}"
        )
    if not callable(getattr(decoder, "forward_features", None)):
        raise ValueError(
            f"MODEL.SEM_SEG_HEAD.PIXEL_DECODER_NAME={name!r} has no forward_features(); "
            "it cannot be used as a pixel decoder"
        )
    return decoder
