"""Mask2Former for detectron2: importing the package registers every component
(backbones, pixel decoders, transformer decoders, the head, the meta-architecture,
datasets and dataset mappers) with detectron2's registries and catalogs.

Without detectron2 installed only the parts that need torch alone import: the
deformable-attention op (`mask2former.ops`), the post-processing
(`mask2former.postprocessing`) and the runtime of exported models (`mask2former.deploy`).
"""
from .utils.freed_memory import keep_freed_memory
from .utils.huge_pages import request_huge_pages

# Large tensors reuse freed memory instead of fresh pages; where the allocator returns it,
# huge pages make the fresh pages cheaper. Both before any large tensor exists.
if not keep_freed_memory():
    request_huge_pages()

try:
    import detectron2  # noqa: F401
except ModuleNotFoundError as e:
    if e.name != "detectron2":  # detectron2 is there but broken: say so
        raise
    detectron2 = None

if detectron2 is not None:
    from . import data  # noqa: F401  (registers datasets)
    from . import modeling  # noqa: F401  (registers model components)
    from .config import add_maskformer2_config, build_config
    from . import video  # noqa: F401  (registers the video model components)
    from .video import add_maskformer2_video_config

    __all__ = ["add_maskformer2_config", "add_maskformer2_video_config", "build_config"]
del detectron2, keep_freed_memory, request_huge_pages
__version__ = "0.1.0"
