#!/usr/bin/env python3
"""Convert COCO-Stuff-10k (cocostuff-10k-v1.1.zip) for `coco_2017_{train,test}_stuff_10k_sem_seg`.

Reads `coco/coco_stuff_10k/{images/*.jpg, annotations/*.mat, imageLists/{train,test}.txt}`
(label `S` in each .mat: 0 unlabelled, else COCO-Stuff id 1..182) and writes
`coco/coco_stuff_10k/images_detectron2/<split>/X.jpg` and
`coco/coco_stuff_10k/annotations_detectron2/<split>/X.png` (uint8 class 0..170 in the order
of `mask2former.data.datasets.coco_stuff_categories`, 255 unlabelled).

Usage: DETECTRON2_DATASETS=/path/to/datasets python datasets/prepare_coco_stuff_10k_sem_seg.py
"""
import os
import sys

import numpy as np
from scipy.io import loadmat

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from prepare_utils import (
    atomic_copy,
    atomic_save_png,
    dataset_root,
    progress,
    require_dir,
)  # noqa: E402

from mask2former.data.datasets.coco_stuff_categories import COCO_STUFF_CATEGORIES  # noqa: E402

# COCO-Stuff id -> class index; 0 (unlabelled) and the 11 unused thing ids -> 255.
_LOOKUP = np.full(256, 255, np.uint8)
for _index, _category in enumerate(COCO_STUFF_CATEGORIES):
    _LOOKUP[_category["id"]] = _index
_KNOWN = {0} | {c["id"] for c in COCO_STUFF_CATEGORIES}


def coco_stuff_label(label: np.ndarray, where: str) -> np.ndarray:
    """(H, W) COCO-Stuff-10k label `S` -> (H, W) uint8 class index (255 unlabelled)."""
    values = set(np.unique(label).tolist())
    unknown = sorted(values - _KNOWN)
    if unknown:
        raise ValueError(f"{where}: labels {unknown[:10]} are not COCO-Stuff ids (0 or 1..182)")
    return _LOOKUP[label.astype(np.int64)]


def convert_split(base: str, split: str):
    list_file = os.path.join(base, "imageLists", f"{split}.txt")
    if not os.path.exists(list_file):
        raise SystemExit(
            f"Image list '{list_file}' not found (it is part of cocostuff-10k-v1.1.zip)."
        )
    with open(list_file) as f:
        stems = [line.strip() for line in f if line.strip()]
    out_images = os.path.join(base, "images_detectron2", split)
    out_labels = os.path.join(base, "annotations_detectron2", split)
    for stem in progress(stems, desc=os.path.relpath(out_labels)):
        label_path = os.path.join(out_labels, stem + ".png")
        if os.path.exists(label_path):
            continue  # finished by an earlier run (the label is written last, atomically)
        image = os.path.join(base, "images", stem + ".jpg")
        mat = os.path.join(base, "annotations", stem + ".mat")
        for path in (image, mat):
            if not os.path.exists(path):
                raise SystemExit(f"'{path}' listed in '{list_file}' is missing.")
        data = loadmat(mat)
        if "S" not in data:
            raise SystemExit(f"'{mat}' has no label array 'S'.")
        try:
            label = coco_stuff_label(data["S"], mat)
        except ValueError as e:
            raise SystemExit(str(e))
        atomic_copy(image, os.path.join(out_images, stem + ".jpg"))
        atomic_save_png(label, label_path)


def main():
    base = os.path.join(dataset_root(), "coco", "coco_stuff_10k")
    require_dir(os.path.join(base, "images"), "COCO-Stuff-10k images")
    for split in ("train", "test"):
        convert_split(base, split)


if __name__ == "__main__":
    main()
