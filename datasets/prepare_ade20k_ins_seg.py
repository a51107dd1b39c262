#!/usr/bin/env python3
"""Build COCO-format instance annotations for ADE20K (`ade20k_instance_{train,val}`).

Reads `ADEChallengeData2016/annotations_instance/{training,validation}/*.png` (from
annotations_instance.tar of the 2017 SceneParsing challenge: R = instance-benchmark
class 1..100, G = instance index, 0 = none) and writes
`ADEChallengeData2016/ade20k_instance_{train,val}.json`. Category ids are the 0-based
SceneParsing-150 class indices, shared with the panoptic annotations.

Usage: DETECTRON2_DATASETS=/path/to/datasets python datasets/prepare_ade20k_ins_seg.py
"""
import os
import sys
from typing import List, Tuple

import numpy as np
import pycocotools.mask as mask_util
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from prepare_utils import atomic_save_json, dataset_root, progress, require_dir  # noqa: E402

from mask2former.data.datasets.ade20k_categories import (  # noqa: E402
    ADE20K_INSTANCE_TO_SEMANTIC,
    ade20k_150_categories,
)


def ade20k_instances(instance_png: np.ndarray, where: str) -> List[Tuple[int, np.ndarray]]:
    """(class index 0..149, (H, W) bool mask) for each instance of an instance PNG
    (H, W, 3) uint8, in instance-index order."""
    if instance_png.ndim != 3 or instance_png.shape[2] < 2:
        raise ValueError(f"{where}: expected an RGB instance PNG, got shape {instance_png.shape}")
    classes, indices = instance_png[..., 0], instance_png[..., 1]
    instances = []
    for index in np.unique(indices):
        if index == 0:
            continue
        mask = indices == index
        instance_classes = np.unique(classes[mask])
        if (
            len(instance_classes) != 1
            or int(instance_classes[0]) not in ADE20K_INSTANCE_TO_SEMANTIC
        ):
            raise ValueError(
                f"{where}: instance {int(index)} has instance-class values "
                f"{instance_classes.tolist()}; expected exactly one in 1..100."
            )
        instances.append((ADE20K_INSTANCE_TO_SEMANTIC[int(instance_classes[0])], mask))
    return instances


def mask_annotation(mask: np.ndarray) -> dict:
    """COCO "segmentation" (compressed RLE), "area" and "bbox" (x, y, w, h) of a mask."""
    rle = mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))
    rle["counts"] = rle["counts"].decode("ascii")
    ys, xs = np.nonzero(mask)
    x0, y0 = int(xs.min()), int(ys.min())
    bbox = [x0, y0, int(xs.max()) - x0 + 1, int(ys.max()) - y0 + 1]
    return {"segmentation": rle, "area": int(mask.sum()), "bbox": bbox}


def build_instance_json(image_dir: str, instance_dir: str) -> dict:
    images, annotations = [], []
    names = sorted(n for n in os.listdir(image_dir) if n.endswith(".jpg"))
    for name in progress(names, desc=f"instances {os.path.basename(image_dir)}"):
        image_id = os.path.splitext(name)[0]  # the same id as in the panoptic json
        width, height = Image.open(os.path.join(image_dir, name)).size
        images.append({"id": image_id, "file_name": name, "width": width, "height": height})
        png_path = os.path.join(instance_dir, image_id + ".png")
        if not os.path.exists(png_path):
            raise SystemExit(f"Instance annotation '{png_path}' of image '{name}' is missing.")
        instance_png = np.asarray(Image.open(png_path).convert("RGB"))
        if instance_png.shape[:2] != (height, width):
            raise SystemExit(
                f"'{png_path}' is {instance_png.shape[1]}x{instance_png.shape[0]}, "
                f"its image {width}x{height}."
            )
        for category_id, mask in ade20k_instances(instance_png, png_path):
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": category_id,
                    "iscrowd": 0,
                    **mask_annotation(mask),
                }
            )
    categories = [
        {"id": c["id"], "name": c["name"], "color": c["color"]}
        for c in ade20k_150_categories()
        if c["isthing"]
    ]
    return {"images": images, "annotations": annotations, "categories": categories}


def main():
    base = os.path.join(dataset_root(), "ADEChallengeData2016")
    for split, dirname in (("train", "training"), ("val", "validation")):
        image_dir = os.path.join(base, "images", dirname)
        instance_dir = os.path.join(base, "annotations_instance", dirname)
        require_dir(image_dir, "ADE20K images")
        require_dir(instance_dir, "ADE20K instance annotations (annotations_instance.tar)")
        atomic_save_json(
            build_instance_json(image_dir, instance_dir),
            os.path.join(base, f"ade20k_instance_{split}.json"),
        )


if __name__ == "__main__":
    main()
