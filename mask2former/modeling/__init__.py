"""Model components; importing this package registers them with detectron2."""
from .meta_arch.maskformer_model import MaskFormer  # noqa: F401  (registers META_ARCH "MaskFormer")
