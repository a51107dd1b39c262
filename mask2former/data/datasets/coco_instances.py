"""Loading COCO-format instance annotations with explicit category maps and clear errors."""

from typing import Dict, List

from detectron2.data.datasets import load_coco_json

from .panoptic_json import read_json

__all__ = ["load_coco_instances", "categories_of_coco_json"]


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
    records = load_coco_json(json_file, image_root, dataset_name=None)
    for record in records:
        for anno in record.get("annotations", []):
            category_id = anno["category_id"]
            if category_id not in thing_dataset_id_to_contiguous_id:
                raise ValueError(
                    f"json_file '{json_file}': an annotation of '{record['file_name']}' has "
                    f"category_id {category_id}, which is not in the dataset's categories "
                    f"{sorted(thing_dataset_id_to_contiguous_id)[:20]}."
                )
            anno["category_id"] = thing_dataset_id_to_contiguous_id[category_id]
    return records
