"""Registry of transformer decoders (the ``predictor`` of ``MaskFormerHead``)."""
from detectron2.utils.registry import Registry

__all__ = ["TRANSFORMER_DECODER_REGISTRY", "build_transformer_decoder"]

TRANSFORMER_DECODER_REGISTRY = Registry("TRANSFORMER_MODULE")
TRANSFORMER_DECODER_REGISTRY.__doc__ = """
Transformer decoders that turn pixel-decoder features into per-query class logits and
mask logits. A registered class is called as ``cls(cfg, in_channels, mask_classification)``
and its ``forward(x, mask_features, mask=None)`` returns
``{"pred_logits", "pred_masks", "aux_outputs"}``.
"""


def build_transformer_decoder(cfg, in_channels: int, mask_classification: bool = True):
    """Build ``cfg.MODEL.MASK_FORMER.TRANSFORMER_DECODER_NAME`` for inputs with ``in_channels``."""
    name = cfg.MODEL.MASK_FORMER.TRANSFORMER_DECODER_NAME
    if name not in TRANSFORMER_DECODER_REGISTRY:
        raise KeyError(
            f"MODEL.MASK_FORMER.TRANSFORMER_DECODER_NAME={name!r} is not a registered transformer "
            f"decoder; known: {sorted(k for k, _ in TRANSFORMER_DECODER_REGISTRY)}"
        )
    return TRANSFORMER_DECODER_REGISTRY.get(name)(cfg, in_channels, mask_classification)
