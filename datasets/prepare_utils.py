"""Helpers shared by the dataset preparation scripts: atomic writes and progress."""

import os
from typing import Iterable, Iterator, TypeVar

import numpy as np
from PIL import Image
from tqdm import tqdm

from mask2former.utils.file_io import atomic_open, atomic_write_bytes, atomic_write_json

__all__ = [
    "atomic_save_image",
    "atomic_save_png",
    "atomic_save_json",
    "atomic_copy",
    "progress",
    "dataset_root",
    "require_dir",
]

T = TypeVar("T")


def dataset_root() -> str:
    return os.getenv("DETECTRON2_DATASETS", "datasets")


def require_dir(path: str, what: str):
    """Exit with a message naming `path` if it is not a folder."""
    if not os.path.isdir(path):
        raise SystemExit(
            f"{what} folder '{path}' not found. Set DETECTRON2_DATASETS to the folder holding "
            "the datasets; see datasets/README.md for the layout and downloads."
        )


def atomic_save_image(array: np.ndarray, path: str, fmt: str):
    """Save an image array (uint8 RGB or label map, uint16 label map) in PIL format
    `fmt` ("PNG", "JPEG", "TIFF"), atomically."""
    image = Image.fromarray(array)
    with atomic_open(path, "wb") as f:
        image.save(f, format=fmt)


def atomic_save_png(array: np.ndarray, path: str):
    """Save a (H, W) uint8 label map or (H, W, 3) uint8 RGB array as PNG, atomically."""
    atomic_save_image(array, path, "PNG")


def atomic_copy(src: str, path: str):
    """Copy the file `src` to `path`, atomically."""
    with open(src, "rb") as f:
        atomic_write_bytes(path, f.read())


def atomic_save_json(obj, path: str):
    atomic_write_json(path, obj)


def progress(items: Iterable[T], desc: str, total: int = None) -> Iterator[T]:
    return tqdm(items, desc=desc, total=total, unit="img", dynamic_ncols=True)
