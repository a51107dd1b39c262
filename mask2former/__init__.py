"""Mask2Former for detectron2: importing the package registers every component
(backbones, pixel decoders, transformer decoders, the head, the meta-architecture,
datasets and dataset mappers) with detectron2's registries and catalogs."""
from . import data  # noqa: F401  (registers datasets)
from . import modeling  # noqa: F401  (registers model components)
from .config import add_maskformer2_config, build_config
from . import video  # noqa: F401  (registers the video model components)
from .video import add_maskformer2_video_config

__all__ = ["add_maskformer2_config", "add_maskformer2_video_config", "build_config"]
__version__ = "0.1.0"
