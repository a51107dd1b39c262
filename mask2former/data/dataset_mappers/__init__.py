"""Dataset mappers: turn a dataset record into the tensors Mask2Former trains on."""

from .build import DATASET_MAPPER_REGISTRY, build_dataset_mapper, dataset_metadata
from .mask_former_instance import COCOInstanceLSJDatasetMapper, MaskFormerInstanceDatasetMapper
from .mask_former_panoptic import COCOPanopticLSJDatasetMapper, MaskFormerPanopticDatasetMapper
from .mask_former_semantic import MaskFormerSemanticDatasetMapper

__all__ = [
    "DATASET_MAPPER_REGISTRY",
    "build_dataset_mapper",
    "dataset_metadata",
    "MaskFormerSemanticDatasetMapper",
    "MaskFormerPanopticDatasetMapper",
    "MaskFormerInstanceDatasetMapper",
    "COCOInstanceLSJDatasetMapper",
    "COCOPanopticLSJDatasetMapper",
]
