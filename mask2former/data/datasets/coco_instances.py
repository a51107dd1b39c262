"""Loading COCO-format instance annotations with explicit category maps and clear errors.

Polygons with fewer than 3 points, zero area or non-finite coordinates cannot be
rasterised (pycocotools fails on them mid-evaluation). `drop_invalid_polygons` removes
them, with one warning naming the json and the annotation ids, and is applied both to
the training records and to the evaluator's ground truth, so both see the same objects.
"""
import logging
import math
from typing import Dict, List, Optional

import numpy as np
from detectron2.data.datasets import load_coco_json

from .panoptic_json import read_json

__all__ = ["load_coco_instances", "categories_of_coco_json", "drop_invalid_polygons"]

logger = logging.getLogger(__name__)


def _valid_polygon(polygon) -> bool:
    """At least 3 finite points enclosing a non-zero area (shoelace formula)."""
    if not isinstance(polygon, (list, tuple)) or len(polygon) < 6 or len(polygon) % 2:
        return False
    try:
        xy = np.asarray(polygon, dtype=np.float64).reshape(-1, 2)
    except (TypeError, ValueError):
        return False
    if not np.isfinite(xy).all():
        return False
    x, y = xy[:, 0], xy[:, 1]
    area = 0.5 * abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))
    return area > 0 and math.isfinite(area)


def _kept_segmentation(segmentation) -> Optional[list]:
    """The valid polygons of a polygon segmentation (None when none is left); RLE and
    other encodings are returned unchanged."""
    if not isinstance(segmentation, list):
        return segmentation
    kept = [p for p in segmentation if _valid_polygon(p)]
    return kept or None


def drop_invalid_polygons(annotations: List[dict], json_file: str, warn: bool = True) -> List[dict]:
    """`annotations` (COCO json entries or detectron2 record annotations) without their
    invalid polygons; an annotation left without any is dropped. Warns once (if `warn`),
    naming `json_file` and the ids of the affected annotations."""
    kept, affected = [], []
    for anno in annotations:
        segmentation = _kept_segmentation(anno.get("segmentation"))
        if segmentation is anno.get("segmentation") or segmentation == anno.get("segmentation"):
            kept.append(anno)
            continue
        affected.append(anno.get("id", "?"))
        if segmentation is not None:
            kept.append(dict(anno, segmentation=segmentation))
    if affected and warn:
        logger.warning(
            f"json '{json_file}': {len(affected)} annotations have polygons with fewer than 3 "
            f"points, zero area or non-finite coordinates; those polygons are dropped (and "
            f"{len(annotations) - len(kept)} annotations left without any). Annotation ids: "
            f"{affected[:10]}{' ...' if len(affected) > 10 else ''}"
        )
    return kept


def categories_of_coco_json(json_file: str) -> List[dict]:
    """The "categories" list of a COCO json, sorted by id; an error if there is none."""
    data = read_json(json_file, "json_file")
    categories = data.get("categories") if isinstance(data, dict) else None
    if not categories:
        raise ValueError(f"json_file '{json_file}' has no 'categories'.")
    return sorted(categories, key=lambda c: c["id"])


def load_coco_instances(
    json_file: str, image_root: str, thing_dataset_id_to_contiguous_id: Dict[int, int]
) -> List[dict]:
    """detectron2 records of a COCO instance json, "category_id" mapped to contiguous ids.

    Raises a ValueError naming the file when it has no images or an annotation uses a
    category outside `thing_dataset_id_to_contiguous_id`.
    """
    data = read_json(json_file, "json_file")
    if not isinstance(data, dict) or not data.get("images"):
        raise ValueError(f"json_file '{json_file}' has no 'images'.")
    if not data.get("annotations"):
        raise ValueError(
            f"json_file '{json_file}' has an empty 'annotations' list: there is nothing to "
            "train or evaluate on."
        )
    drop_invalid_polygons(data["annotations"], json_file)  # warns, naming the annotation ids
    records = load_coco_json(json_file, image_root, dataset_name=None)
    for record in records:
        # the same polygons as the evaluator's ground truth (the records carry no ids)
        record["annotations"] = drop_invalid_polygons(record.get("annotations", []), json_file, warn=False)
        for anno in record["annotations"]:
            category_id = anno["category_id"]
            if category_id not in thing_dataset_id_to_contiguous_id:
                raise ValueError(
                    f"json_file '{json_file}': an annotation of '{record['file_name']}' has "
                    f"category_id {category_id}, which is not in the dataset's categories "
                    f"{sorted(thing_dataset_id_to_contiguous_id)[:20]}."
                )
            anno["category_id"] = thing_dataset_id_to_contiguous_id[category_id]
    return records
