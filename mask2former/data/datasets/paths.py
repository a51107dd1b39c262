"""Where the published datasets live, and the error raised when one is not there.

Registration only records paths; the folders are checked when a dataset is first loaded,
so that `import mask2former` never touches the disk.
"""

import os
from typing import Dict

from detectron2.utils.file_io import PathManager

__all__ = ["dataset_root", "require_paths", "DatasetNotFoundError"]


class DatasetNotFoundError(FileNotFoundError):
    """A registered dataset's files are not where its registration expects them."""


def dataset_root() -> str:
    """$DETECTRON2_DATASETS, or "datasets" (relative to the working directory)."""
    return os.getenv("DETECTRON2_DATASETS", "datasets")


def require_paths(dataset_name: str, paths: Dict[str, str], how_to_get: str):
    """Raise DatasetNotFoundError naming the first missing path of `paths` (field -> path).

    Args:
        how_to_get: what to download or run to create the missing files.
    """
    for field, path in paths.items():
        if path and not PathManager.exists(path):
            raise DatasetNotFoundError(
                f"Dataset '{dataset_name}' needs {field} '{path}', which does not exist. "
                f"{how_to_get} Datasets are looked up under $DETECTRON2_DATASETS "
                f"(now '{dataset_root()}'); see datasets/README.md for the expected layout."
            )
