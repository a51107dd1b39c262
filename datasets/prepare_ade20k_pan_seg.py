#!/usr/bin/env python3
"""Build COCO-format panoptic annotations for ADE20K (`ade20k_panoptic_{train,val}`).

Stuff segments come from the semantic labels `ADEChallengeData2016/annotations/` (one
segment per stuff class present), thing segments from `annotations_instance/` (one per
instance; they are pasted over stuff where the two overlap). Thing-class pixels without an
instance stay unlabelled. Writes `ade20k_panoptic_{train,val}/*.png` (RGB-encoded segment
ids) and `ade20k_panoptic_{train,val}.json` whose category ids are the 0-based
SceneParsing-150 class indices.

Usage: DETECTRON2_DATASETS=/path/to/datasets python datasets/prepare_ade20k_pan_seg.py
"""
import os
import sys
from typing import List, Tuple

import numpy as np
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from prepare_ade20k_ins_seg import ade20k_instances  # noqa: E402
from prepare_utils import (
    atomic_save_json,
    atomic_save_png,
    dataset_root,
    progress,
    require_dir,
)  # noqa: E402

from mask2former.data.datasets.ade20k_categories import (
    ADE20K_150_THING_IDS,
    ade20k_150_categories,
)  # noqa: E402

_THINGS = set(ADE20K_150_THING_IDS)


def id_to_rgb(ids: np.ndarray) -> np.ndarray:
    """(H, W) segment ids -> (H, W, 3) uint8 with id = R + 256 G + 256^2 B."""
    ids = ids.astype(np.uint32)
    return np.stack([ids % 256, ids // 256 % 256, ids // 65536 % 256], axis=-1).astype(np.uint8)


def ade20k_panoptic(
    semantic_png: np.ndarray, instance_png: np.ndarray, where: str
) -> Tuple[np.ndarray, List[dict]]:
    """Panoptic (H, W) int32 segment-id map (0 = unlabelled) and segments_info of one image.

    semantic_png: (H, W) uint8 original ADE20K labels (0 other, 1..150).
    instance_png: (H, W, 3) uint8 instance annotation.
    """
    if semantic_png.shape != instance_png.shape[:2]:
        raise ValueError(
            f"{where}: semantic {semantic_png.shape} and instance {instance_png.shape[:2]} "
            "sizes differ"
        )
    segment_ids = np.zeros(semantic_png.shape, np.int32)
    categories = []
    for label in np.unique(semantic_png):
        class_index = int(label) - 1
        if class_index < 0 or class_index in _THINGS:
            continue  # "other", or a thing class that the instance map provides
        if class_index >= 150:
            raise ValueError(f"{where}: semantic label {int(label)} is outside 1..150")
        categories.append(class_index)
        segment_ids[semantic_png == label] = len(categories)
    for class_index, mask in ade20k_instances(instance_png, where):
        categories.append(class_index)
        segment_ids[mask] = len(categories)

    segments_info = []
    for segment_id, category_id in enumerate(categories, start=1):
        mask = segment_ids == segment_id
        if not mask.any():
            continue  # a stuff segment entirely covered by things
        ys, xs = np.nonzero(mask)
        x0, y0 = int(xs.min()), int(ys.min())
        segments_info.append(
            {
                "id": segment_id,
                "category_id": category_id,
                "iscrowd": 0,
                "area": int(mask.sum()),
                "bbox": [x0, y0, int(xs.max()) - x0 + 1, int(ys.max()) - y0 + 1],
            }
        )
    return segment_ids, segments_info


def build_panoptic(image_dir: str, semantic_dir: str, instance_dir: str, out_dir: str) -> dict:
    images, annotations = [], []
    names = sorted(n for n in os.listdir(image_dir) if n.endswith(".jpg"))
    for name in progress(names, desc=f"panoptic {os.path.basename(image_dir)}"):
        image_id = os.path.splitext(name)[0]
        width, height = Image.open(os.path.join(image_dir, name)).size
        sem_path = os.path.join(semantic_dir, image_id + ".png")
        ins_path = os.path.join(instance_dir, image_id + ".png")
        for path in (sem_path, ins_path):
            if not os.path.exists(path):
                raise SystemExit(f"Annotation '{path}' of image '{name}' is missing.")
        semantic_png = np.asarray(Image.open(sem_path))
        if semantic_png.shape != (height, width):
            raise SystemExit(
                f"'{sem_path}' has shape {semantic_png.shape}, its image is {height}x{width}."
            )
        try:
            segment_ids, segments_info = ade20k_panoptic(
                semantic_png, np.asarray(Image.open(ins_path).convert("RGB")), ins_path
            )
        except ValueError as e:
            raise SystemExit(str(e))
        atomic_save_png(id_to_rgb(segment_ids), os.path.join(out_dir, image_id + ".png"))
        images.append({"id": image_id, "file_name": name, "width": width, "height": height})
        annotations.append(
            {"image_id": image_id, "file_name": image_id + ".png", "segments_info": segments_info}
        )
    return {"images": images, "annotations": annotations, "categories": ade20k_150_categories()}


def main():
    base = os.path.join(dataset_root(), "ADEChallengeData2016")
    for split, dirname in (("train", "training"), ("val", "validation")):
        dirs = [
            os.path.join(base, sub, dirname)
            for sub in ("images", "annotations", "annotations_instance")
        ]
        for d in dirs:
            require_dir(d, "ADE20K")
        data = build_panoptic(*dirs, out_dir=os.path.join(base, f"ade20k_panoptic_{split}"))
        atomic_save_json(data, os.path.join(base, f"ade20k_panoptic_{split}.json"))


if __name__ == "__main__":
    main()
