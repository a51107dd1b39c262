"""Reading one record's image and label files, with errors that name the file and field.

Every mapper reads through these helpers so that a missing or corrupt file, a label map
whose size differs from its image, or a label outside the class list stops training with
a message saying which file and which field are wrong, instead of silently producing a
wrong target.
"""

import logging
import os
from typing import Optional, Sequence

import numpy as np
from PIL import Image, UnidentifiedImageError

from detectron2.data import detection_utils as utils
from detectron2.utils.file_io import PathManager

__all__ = [
    "UnreadableImageError",
    "check_image_decodes",
    "read_image_checked",
    "read_label_map",
    "read_panoptic_png",
    "check_same_size",
    "check_label_values",
    "check_category_ids",
    "check_record_size",
]

logger = logging.getLogger(__name__)

# Image modes converted to the configured colour format without a warning.
_COLOUR_MODES = ("RGB",)
# (mode, format) pairs already reported, so that a dataset of grayscale photos logs once.
_reported_conversions = set()


class UnreadableImageError(ValueError):
    """An image or label file exists but cannot be decoded (truncated, corrupt, not an image)."""


def _open_pil(file_name: str, field: str) -> Image.Image:
    if not file_name:
        raise ValueError(f"The dataset record has an empty '{field}'.")
    if not PathManager.exists(file_name):
        raise FileNotFoundError(f"{field} '{file_name}' does not exist.")
    try:
        with PathManager.open(file_name, "rb") as f:
            image = Image.open(f)
            image.load()  # decode now, inside the try, so that truncated files are caught here
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise UnreadableImageError(f"{field} '{file_name}' is not a readable image ({e}).") from e
    return image


def check_image_decodes(file_name: str, field: str = "file_name") -> None:
    """Raise `UnreadableImageError` naming `file_name` unless the whole image decodes
    (OpenCV returns a truncated JPEG with its missing part grey, and only warns)."""
    _open_pil(file_name, field).close()


def read_image_checked(file_name: str, image_format: str, field: str = "file_name") -> np.ndarray:
    """Read an image as (H, W, 3) uint8 in `image_format` ("RGB" or "BGR"), EXIF-rotated.

    Grayscale, palette, RGBA or CMYK files are converted to the format; the first such
    conversion of each kind is logged (alpha is dropped, gray is replicated).
    """
    image = _open_pil(file_name, field)
    image = utils._apply_exif_orientation(image)
    if image.mode not in _COLOUR_MODES and image_format in ("RGB", "BGR"):
        key = (image.mode, image_format)
        if key not in _reported_conversions:
            _reported_conversions.add(key)
            logger.warning(
                f"{field} '{file_name}' has PIL mode {image.mode}; converting it (and any "
                f"further {image.mode} images) to {image_format}"
                + (" by dropping the alpha channel." if "A" in image.mode else ".")
            )
        image = image.convert("RGB")
    return utils.convert_PIL_to_numpy(image, image_format)


def read_label_map(file_name: str, field: str = "sem_seg_file_name") -> np.ndarray:
    """Read a single-channel label map (PNG or TIFF, 8 or 16 bit) as an (H, W) array.

    A colour (3-channel) file is an error: it most likely is a visualisation, not labels.
    """
    label = _open_pil(file_name, field)
    if label.mode in ("RGB", "RGBA", "CMYK", "YCbCr", "LAB", "HSV"):
        raise ValueError(
            f"{field} '{file_name}' is a {label.mode} colour image; a label map must have one "
            "channel of class indices (see datasets/README.md for the conversion scripts)."
        )
    # Palette ("P") PNGs store class indices; their palette is only for display.
    return np.asarray(label)


def read_panoptic_png(file_name: str, field: str = "pan_seg_file_name") -> np.ndarray:
    """Read a COCO-format panoptic PNG as (H, W, 3) uint8 RGB (id = R + 256 G + 256^2 B)."""
    png = _open_pil(file_name, field)
    if png.mode != "RGB":
        raise ValueError(
            f"{field} '{file_name}' has PIL mode {png.mode}; COCO panoptic annotations are RGB "
            "PNGs whose colour encodes the segment id."
        )
    return np.asarray(png)


def check_same_size(
    label: np.ndarray, image: np.ndarray, file_name: str, field: str, image_file: str
):
    """Raise if `label` (H, W[, C]) does not cover `image` (H, W, 3) pixel for pixel."""
    if tuple(label.shape[:2]) != tuple(image.shape[:2]):
        raise ValueError(
            f"{field} '{file_name}' is {label.shape[1]}x{label.shape[0]} (WxH) but its image "
            f"'{image_file}' is {image.shape[1]}x{image.shape[0]}."
        )


def check_label_values(
    label: np.ndarray, num_classes: Optional[int], ignore_label: int, file_name: str, field: str
):
    """Raise if a pixel of `label` is neither a class index in [0, num_classes) nor ignore."""
    if num_classes is None:
        return
    if label.dtype in (np.uint8, np.uint16):
        # Counting is linear time; np.unique sorts every pixel of large label maps.
        values = np.flatnonzero(np.bincount(label.ravel()))
    else:
        values = np.unique(label)
    bad = values[((values < 0) | (values >= num_classes)) & (values != ignore_label)]
    if len(bad):
        raise ValueError(
            f"{field} '{file_name}' contains labels {bad[:10].tolist()} outside the "
            f"{num_classes} classes of the dataset (ignore label {ignore_label}). "
            "Was the label map converted with the right script (e.g. ADE20K needs "
            "datasets/prepare_ade20k_sem_seg.py)?"
        )


def check_category_ids(
    category_ids: Sequence[int], num_classes: Optional[int], file_name: str, field: str
):
    """Raise if a (contiguous) category id lies outside [0, num_classes)."""
    if num_classes is None:
        return
    bad = sorted({int(c) for c in category_ids if not 0 <= int(c) < num_classes})
    if bad:
        raise ValueError(
            f"{field} of '{file_name}' uses category ids {bad[:10]} outside the "
            f"{num_classes} classes of the dataset's metadata."
        )


def check_record_size(dataset_dict: dict, image: np.ndarray):
    """Raise if the record's "height"/"width" disagree with the image actually read."""
    h, w = image.shape[:2]
    expected = (dataset_dict.get("height"), dataset_dict.get("width"))
    if expected[0] is not None and expected[1] is not None and (h, w) != tuple(expected):
        raise ValueError(
            f"file_name '{dataset_dict['file_name']}' is {w}x{h} (WxH) but its record's "
            f"'width'/'height' say {expected[1]}x{expected[0]}."
        )
    dataset_dict.setdefault("height", h)
    dataset_dict.setdefault("width", w)
    dataset_dict.setdefault(
        "image_id", os.path.splitext(os.path.basename(dataset_dict["file_name"]))[0]
    )
