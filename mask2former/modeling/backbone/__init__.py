"""Backbones. ``D2SwinTransformer`` is defined here; the ResNets are detectron2's:
``build_resnet_backbone`` (built in) and ``build_resnet_deeplab_backbone`` (detectron2's DeepLab
project: 3x3-conv "deeplab" stem, dilated res4/res5 with multi-grid), registered on import."""
import logging

from .swin import D2SwinTransformer

try:
    from detectron2.projects.deeplab import resnet as _deeplab_resnet  # noqa: F401  (registers the backbone)
except ImportError as e:  # an install of detectron2 without its projects
    logging.getLogger(__name__).warning(f"build_resnet_deeplab_backbone is unavailable: {e}")

__all__ = ["D2SwinTransformer"]
