#!/usr/bin/env python3
"""Build the 847-class ADE20K-full semantic benchmark (`ade20k_full_sem_seg_{train,val}`).

Reads every `ADE20K_2021_17_01/images/ADE/{training,validation}/**/X.jpg` with its
`X_seg.png` (object class index = (R / 10) * 256 + G), keeps the 847 benchmark classes,
shrinks images whose shorter side exceeds 512 pixels to 512, and writes
`ADE20K_2021_17_01/images_detectron2/<split>/X.jpg` and
`ADE20K_2021_17_01/annotations_detectron2/<split>/X.tif` (uint16 class, 65535 ignored).

Usage: DETECTRON2_DATASETS=/path/to/datasets python datasets/prepare_ade20k_full_sem_seg.py
"""
import os
import sys
from typing import Tuple

import cv2
import numpy as np
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from prepare_utils import atomic_save_image, dataset_root, progress, require_dir  # noqa: E402

from mask2former.data.datasets.ade20k_full_categories import (  # noqa: E402
    ADE20K_FULL_CATEGORIES,
    ADE20K_FULL_IGNORE_LABEL,
)

MAX_SHORT_SIDE = 512

# ADE object index -> training id; indices outside the benchmark map to the ignore label.
_LOOKUP = np.full(26 * 256, ADE20K_FULL_IGNORE_LABEL, np.uint16)
for _category in ADE20K_FULL_CATEGORIES:
    _LOOKUP[_category["id"]] = _category["trainId"]


def ade20k_full_label(seg_png: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 ADE20K `*_seg.png` -> (H, W) uint16 training ids (65535 ignored)."""
    if seg_png.ndim != 3 or seg_png.shape[2] < 3:
        raise ValueError(f"expected an RGB *_seg.png, got shape {seg_png.shape}")
    object_index = (seg_png[..., 0].astype(np.int32) // 10) * 256 + seg_png[..., 1].astype(np.int32)
    return _LOOKUP[object_index]


def shrink(
    image: np.ndarray, label: np.ndarray, max_short_side: int = MAX_SHORT_SIDE
) -> Tuple[np.ndarray, np.ndarray]:
    """Resize so that the shorter side is at most `max_short_side` (bilinear image,
    nearest label); smaller images are returned unchanged."""
    h, w = label.shape
    if min(h, w) <= max_short_side:
        return image, label
    if h <= w:
        new_h, new_w = max_short_side, round(w / h * max_short_side)
    else:
        new_h, new_w = round(h / w * max_short_side), max_short_side
    image = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    label = cv2.resize(label, (new_w, new_h), interpolation=cv2.INTER_NEAREST)
    return image, label


def convert_split(src_dir: str, out_images: str, out_labels: str):
    os.makedirs(out_images, exist_ok=True)
    os.makedirs(out_labels, exist_ok=True)
    jpgs = sorted(
        os.path.join(folder, name)
        for folder, _, names in os.walk(src_dir)
        for name in names
        if name.endswith(".jpg")
    )
    for jpg in progress(jpgs, desc=os.path.relpath(out_labels)):
        stem = os.path.splitext(os.path.basename(jpg))[0]
        label_path = os.path.join(out_labels, stem + ".tif")
        if os.path.exists(label_path):
            continue  # finished by an earlier run (the label is written last, atomically)
        seg_path = jpg[: -len(".jpg")] + "_seg.png"
        if not os.path.exists(seg_path):
            raise SystemExit(f"Segmentation '{seg_path}' of image '{jpg}' is missing.")
        image = np.asarray(Image.open(jpg).convert("RGB"))
        try:
            label = ade20k_full_label(np.asarray(Image.open(seg_path).convert("RGB")))
        except ValueError as e:
            raise SystemExit(f"{seg_path}: {e}")
        if label.shape != image.shape[:2]:
            raise SystemExit(
                f"'{seg_path}' is {label.shape[::-1]} (WxH) but '{jpg}' is {image.shape[1::-1]}."
            )
        image, label = shrink(image, label)
        atomic_save_image(image, os.path.join(out_images, stem + ".jpg"), "JPEG")
        atomic_save_image(label, label_path, "TIFF")


def main():
    base = os.path.join(dataset_root(), "ADE20K_2021_17_01")
    for dirname in ("training", "validation"):
        src = os.path.join(base, "images", "ADE", dirname)
        require_dir(src, "ADE20K-full images")
        convert_split(
            src,
            os.path.join(base, "images_detectron2", dirname),
            os.path.join(base, "annotations_detectron2", dirname),
        )


if __name__ == "__main__":
    main()
