"""Loading COCO-format panoptic annotations (json + PNG folder) as detectron2 records."""

import json
import os
from typing import Dict, List, Optional

from detectron2.utils.file_io import PathManager

__all__ = ["load_panoptic_json", "read_json"]


def read_json(json_file: str, what: str) -> dict:
    """Parse `json_file`; errors name the file and say which annotation it should be."""
    try:
        with PathManager.open(json_file) as f:
            return json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{what} '{json_file}' is not valid JSON ({e}).") from e


def load_panoptic_json(
    json_file: str,
    image_root: str,
    panoptic_root: str,
    sem_seg_root: Optional[str],
    thing_dataset_id_to_contiguous_id: Dict[int, int],
    stuff_dataset_id_to_contiguous_id: Dict[int, int],
    image_ext: str = ".jpg",
) -> List[dict]:
    """Records with "file_name", "image_id", "height"/"width" (when the json has them),
    "pan_seg_file_name", "sem_seg_file_name" (when `sem_seg_root`) and "segments_info"
    whose "category_id" is contiguous and with "isthing" set.

    The image file is taken from the json's "images" entry when it has one, else the
    PNG's name with `image_ext`. Category ids in neither map raise an error naming the
    json and image.
    """
    data = read_json(json_file, "panoptic_json")
    annotations = data.get("annotations") if isinstance(data, dict) else None
    if not annotations:
        raise ValueError(f"panoptic_json '{json_file}' has no 'annotations'.")
    images = {img["id"]: img for img in data.get("images", [])}

    records = []
    for ann in annotations:
        image_info = images.get(ann["image_id"], {})
        stem = os.path.splitext(ann["file_name"])[0]
        record = {
            "file_name": os.path.join(image_root, image_info.get("file_name", stem + image_ext)),
            "image_id": ann["image_id"],
            "pan_seg_file_name": os.path.join(panoptic_root, ann["file_name"]),
        }
        if "height" in image_info and "width" in image_info:
            record["height"], record["width"] = image_info["height"], image_info["width"]
        if sem_seg_root:
            record["sem_seg_file_name"] = os.path.join(sem_seg_root, stem + ".png")
        segments = []
        for segment in ann["segments_info"]:
            category_id = segment["category_id"]
            segment = dict(segment)
            if category_id in thing_dataset_id_to_contiguous_id:
                segment["category_id"] = thing_dataset_id_to_contiguous_id[category_id]
                segment["isthing"] = True
            elif category_id in stuff_dataset_id_to_contiguous_id:
                segment["category_id"] = stuff_dataset_id_to_contiguous_id[category_id]
                segment["isthing"] = False
            else:
                raise ValueError(
                    f"panoptic_json '{json_file}': segment {segment.get('id')} of "
                    f"'{ann['file_name']}' has category_id {category_id}, which is not in "
                    "the dataset's category list."
                )
            segments.append(segment)
        record["segments_info"] = segments
        records.append(record)
    return records
