"""Model components; importing this package registers them with detectron2."""
from .meta_arch.maskformer_model import MaskFormer  # noqa: F401  (registers META_ARCH "MaskFormer")
from .backbone import swin  # noqa: F401  (registers BACKBONE "D2SwinTransformer")
from .pixel_decoder import build_pixel_decoder  # noqa: F401  (registers the pixel decoders)
from .transformer_decoder import build_transformer_decoder  # noqa: F401  (registers the transformer decoders)
from .meta_arch.mask_former_head import MaskFormerHead  # noqa: F401  (registers SEM_SEG_HEAD "MaskFormerHead")
from .test_time_augmentation import MaskFormerWithTTA, QueryFusion  # noqa: F401
