#!/usr/bin/env python3
"""Convert ADE20K SceneParsing labels to detectron2's convention.

In `ADEChallengeData2016/annotations/{training,validation}/*.png` value 0 means "other"
and 1..150 are the classes. This writes `annotations_detectron2/...` with class v - 1 and
255 for "other", which is what `ade20k_sem_seg_*` and `ade20k_panoptic_*` read.

Usage: DETECTRON2_DATASETS=/path/to/datasets python datasets/prepare_ade20k_sem_seg.py
"""
import os
import sys

import numpy as np
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from prepare_utils import atomic_save_png, dataset_root, progress, require_dir  # noqa: E402


def convert_ade20k_label(label: np.ndarray) -> np.ndarray:
    """(H, W) uint8 ADE20K label (0 other, 1..150) -> (H, W) uint8 (0..149, 255 other)."""
    if label.ndim != 2:
        raise ValueError(f"expected a single-channel label map, got shape {label.shape}")
    if label.max(initial=0) > 150:
        raise ValueError(f"ADE20K labels go up to 150, found {int(label.max())}")
    return (label.astype(np.int16) - 1).astype(np.uint8)  # 0 - 1 wraps to 255


def convert_folder(src: str, dst: str):
    names = sorted(n for n in os.listdir(src) if n.endswith(".png"))
    for name in progress(names, desc=os.path.relpath(dst)):
        out = os.path.join(dst, name)
        if os.path.exists(out):
            continue  # finished by an earlier run (writes are atomic)
        label = np.asarray(Image.open(os.path.join(src, name)))
        try:
            converted = convert_ade20k_label(label)
        except ValueError as e:
            raise SystemExit(f"{os.path.join(src, name)}: {e}")
        atomic_save_png(converted, out)


def main():
    base = os.path.join(dataset_root(), "ADEChallengeData2016")
    for dirname in ("training", "validation"):
        src = os.path.join(base, "annotations", dirname)
        require_dir(src, "ADE20K annotations")
        convert_folder(src, os.path.join(base, "annotations_detectron2", dirname))


if __name__ == "__main__":
    main()
