#!/usr/bin/env python3
"""Derive COCO semantic labels from the panoptic annotations.

For each `coco/panoptic_{train,val}2017/*.png` listed in
`coco/annotations/panoptic_{train,val}2017.json`, writes
`coco/panoptic_semseg_{train,val}2017/*.png`: (H, W) uint8 with the contiguous class index
(0..132, the order of COCO's 133 panoptic categories) and 255 where no segment is. Crowd
segments keep their class. These labels are read by `coco_2017_*_panoptic_with_sem_seg`.

Usage:
    DETECTRON2_DATASETS=/path/to/datasets \
        python datasets/prepare_coco_semantic_annos_from_panoptic.py [--workers N]
"""
import argparse
import functools
import json
import os
import sys
from multiprocessing import Pool
from typing import Dict, List

import numpy as np
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from prepare_utils import atomic_save_png, dataset_root, progress, require_dir  # noqa: E402


def semantic_from_panoptic(
    panoptic_png: np.ndarray,
    segments_info: List[dict],
    category_to_class: Dict[int, int],
    where: str,
) -> np.ndarray:
    """(H, W, 3) uint8 panoptic PNG + its segments -> (H, W) uint8 class map (255 = none)."""
    if panoptic_png.ndim != 3 or panoptic_png.shape[2] != 3:
        raise ValueError(f"{where}: expected an RGB panoptic PNG, got shape {panoptic_png.shape}")
    rgb = panoptic_png.astype(np.int64)
    segment_ids = rgb[..., 0] + 256 * rgb[..., 1] + 65536 * rgb[..., 2]
    semantic = np.full(segment_ids.shape, 255, np.uint8)
    for segment in segments_info:
        if segment["category_id"] not in category_to_class:
            raise ValueError(
                f"{where}: segment {segment['id']} has unknown category_id {segment['category_id']}"
            )
        semantic[segment_ids == segment["id"]] = category_to_class[segment["category_id"]]
    return semantic


def _convert_one(
    annotation: dict, panoptic_dir: str, out_dir: str, category_to_class: Dict[int, int]
):
    out = os.path.join(out_dir, annotation["file_name"])
    if os.path.exists(out):
        return  # finished by an earlier run (writes are atomic)
    src = os.path.join(panoptic_dir, annotation["file_name"])
    if not os.path.exists(src):
        raise SystemExit(f"Panoptic PNG '{src}' listed in the json is missing.")
    panoptic_png = np.asarray(Image.open(src).convert("RGB"))
    atomic_save_png(
        semantic_from_panoptic(panoptic_png, annotation["segments_info"], category_to_class, src),
        out,
    )


def convert_split(panoptic_json: str, panoptic_dir: str, out_dir: str, workers: int):
    with open(panoptic_json) as f:
        data = json.load(f)
    categories = sorted(data["categories"], key=lambda c: c["id"])
    # COCO lists its 80 things (ids 1..90) before its 53 stuff classes (ids 92..200),
    # and the contiguous index follows that id order.
    category_to_class = {c["id"]: i for i, c in enumerate(categories)}
    os.makedirs(out_dir, exist_ok=True)
    work = functools.partial(
        _convert_one,
        panoptic_dir=panoptic_dir,
        out_dir=out_dir,
        category_to_class=category_to_class,
    )
    annotations = data["annotations"]
    desc = os.path.relpath(out_dir)
    if workers <= 1:
        for annotation in progress(annotations, desc=desc):
            work(annotation)
        return
    with Pool(workers) as pool:
        for _ in progress(
            pool.imap_unordered(work, annotations, chunksize=16), desc=desc, total=len(annotations)
        ):
            pass


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=max(1, (os.cpu_count() or 1) // 2))
    args = parser.parse_args()
    base = os.path.join(dataset_root(), "coco")
    for split in ("train", "val"):
        panoptic_dir = os.path.join(base, f"panoptic_{split}2017")
        require_dir(panoptic_dir, "COCO panoptic annotations")
        convert_split(
            os.path.join(base, f"annotations/panoptic_{split}2017.json"),
            panoptic_dir,
            os.path.join(base, f"panoptic_semseg_{split}2017"),
            args.workers,
        )


if __name__ == "__main__":
    main()
