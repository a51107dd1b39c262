"""Mask2Former for video instance segmentation; importing this package registers the video
model components."""
from . import data  # noqa: F401  (registers the YouTube-VIS datasets)
from . import modeling  # noqa: F401  (registers VideoMaskFormer and its decoder)
from .config import add_maskformer2_video_config

__all__ = ["add_maskformer2_video_config"]
