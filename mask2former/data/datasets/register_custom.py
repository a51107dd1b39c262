"""Registering your own data in a few lines, with the metadata the evaluators need.

    from mask2former.data.datasets import register_semantic_folder
    register_semantic_folder("my_train", "data/images", "data/masks", ["road", "car"])
    # then: DATASETS.TRAIN ("my_train",) and INPUT.DATASET_MAPPER_NAME mask_former_semantic

Unlike the published datasets, these helpers check their paths (and read the category
list of a json) right away, so that a typo fails at registration, not mid-training.
"""

import json
import os
from typing import List, Optional, Sequence

import yaml

from detectron2.data import DatasetCatalog

from .coco_instances import categories_of_coco_json
from .panoptic_json import read_json
from .registration import (
    panoptic_metadata,
    register_instances,
    register_panoptic,
    register_semantic,
)

__all__ = [
    "register_coco_instances_dataset",
    "register_coco_panoptic_dataset",
    "register_semantic_folder",
    "register_datasets_from_file",
]


def _check_new_name(name: str):
    if name in DatasetCatalog.list():
        raise ValueError(
            f"A dataset named '{name}' is already registered; choose another name "
            "(or DatasetCatalog.remove it first)."
        )


def _check_exists(**paths):
    for field, path in paths.items():
        if path is not None and not os.path.exists(path):
            raise FileNotFoundError(f"{field} '{path}' does not exist.")


def _default_color(i: int):
    return [(67 * i + 41) % 256, (151 * i + 97) % 256, (29 * i + 193) % 256]


def register_semantic_folder(
    name: str,
    image_dir: str,
    mask_dir: str,
    class_names: Sequence[str],
    ignore_label: int = 255,
    image_ext: str = ".jpg",
    mask_ext: str = ".png",
) -> None:
    """Register images `image_dir/X{image_ext}` with label maps `mask_dir/X{mask_ext}`.

    A label map is single-channel; pixel value i is `class_names[i]`, `ignore_label`
    is unlabelled. Evaluated with detectron2's SemSegEvaluator (evaluator_type sem_seg).
    """
    _check_new_name(name)
    _check_exists(image_dir=image_dir, mask_dir=mask_dir)
    if not class_names:
        raise ValueError("class_names must list at least one class.")
    if 0 <= ignore_label < len(class_names):
        raise ValueError(
            f"ignore_label {ignore_label} is also the index of class '{class_names[ignore_label]}'."
        )
    register_semantic(
        name,
        image_root=image_dir,
        sem_seg_root=mask_dir,
        stuff_classes=list(class_names),
        ignore_label=ignore_label,
        image_ext=image_ext,
        gt_ext=mask_ext,
        stuff_colors=[_default_color(i) for i in range(len(class_names))],
        how_to_get="Check the paths given to register_semantic_folder.",
    )


def register_coco_instances_dataset(name: str, json_file: str, image_root: str) -> None:
    """Register a COCO-format instance json (polygons or RLE); categories come from the
    json, mapped to contiguous ids in id order. Evaluated with COCOEvaluator (AP)."""
    _check_new_name(name)
    _check_exists(json_file=json_file, image_root=image_root)
    categories = categories_of_coco_json(json_file)
    register_instances(
        name,
        json_file=json_file,
        image_root=image_root,
        thing_classes=[c["name"] for c in categories],
        thing_dataset_id_to_contiguous_id={c["id"]: i for i, c in enumerate(categories)},
        thing_colors=[c.get("color", _default_color(i)) for i, c in enumerate(categories)],
        evaluator_type="coco",
        how_to_get="Check the paths given to register_coco_instances_dataset.",
    )


def register_coco_panoptic_dataset(
    name: str,
    image_root: str,
    panoptic_root: str,
    panoptic_json: str,
    sem_seg_root: Optional[str] = None,
    instances_json: Optional[str] = None,
    image_ext: str = ".jpg",
) -> None:
    """Register a COCO-format panoptic dataset (json with "annotations"/"categories" and a
    folder of RGB PNGs). Categories come from the json ("isthing" marks things).

    Args:
        sem_seg_root: optional folder of semantic label maps named like the panoptic PNGs
            (contiguous ids, 255 ignored); without it the panoptic mapper derives them.
        instances_json: optional COCO instance json of the same images, for AP.
    Evaluated with COCOPanopticEvaluator (evaluator_type coco_panoptic_seg).
    """
    _check_new_name(name)
    _check_exists(
        image_root=image_root,
        panoptic_root=panoptic_root,
        panoptic_json=panoptic_json,
        sem_seg_root=sem_seg_root,
        instances_json=instances_json,
    )
    data = read_json(panoptic_json, "panoptic_json")
    categories = data.get("categories") if isinstance(data, dict) else None
    if not categories:
        raise ValueError(f"panoptic_json '{panoptic_json}' has no 'categories'.")
    categories = [
        {
            "id": c["id"],
            "name": c["name"],
            "isthing": int(c.get("isthing", 0)),
            "color": c.get("color", _default_color(i)),
        }
        for i, c in enumerate(sorted(categories, key=lambda c: c["id"]))
    ]
    register_panoptic(
        name,
        metadata=panoptic_metadata(categories),
        image_root=image_root,
        panoptic_root=panoptic_root,
        panoptic_json=panoptic_json,
        sem_seg_root=sem_seg_root,
        instances_json=instances_json,
        evaluator_type="coco_panoptic_seg",
        image_ext=image_ext,
        how_to_get="Check the paths given to register_coco_panoptic_dataset.",
    )


def _register_ytvis_dataset(name: str, **kwargs) -> None:
    # Imported here: the video data package itself imports this one.
    from mask2former.video.data import register_ytvis_dataset

    register_ytvis_dataset(name, **kwargs)


_HELPERS = {
    "semantic_folder": register_semantic_folder,
    "coco_instances": register_coco_instances_dataset,
    "coco_panoptic": register_coco_panoptic_dataset,
    "ytvis": _register_ytvis_dataset,
}
# Arguments that are paths; relative ones are taken relative to the datasets file.
_PATH_ARGUMENTS = {
    "image_dir",
    "mask_dir",
    "json_file",
    "image_root",
    "panoptic_root",
    "panoptic_json",
    "sem_seg_root",
    "instances_json",
}


def register_datasets_from_file(path: str) -> List[str]:
    """Register the datasets listed in a JSON or YAML file; returns their names.

    The file holds a list of entries such as
        {"name": "fruit_train", "type": "semantic_folder", "image_dir": "images",
         "mask_dir": "masks", "class_names": ["apple", "pear"]}
    where "type" is semantic_folder, coco_instances, coco_panoptic or ytvis (video, see
    `mask2former.video.data.register_ytvis_dataset`) and the other keys are the arguments
    of the matching register_* helper. Relative paths are relative to the
    file. Setting the environment variable MASK2FORMER_DATASETS to such a file registers
    its datasets whenever mask2former is imported (also in worker processes), so that
    `train_net.py` can use them by name.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"Datasets file '{path}' does not exist.")
    with open(path) as f:
        text = f.read()
    try:
        entries = json.loads(text) if path.endswith(".json") else yaml.safe_load(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"Datasets file '{path}', line {e.lineno}: cannot be parsed ({e.msg}).") from e
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f", line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ValueError(f"Datasets file '{path}'{where}: cannot be parsed ({problem}).") from e
    if not isinstance(entries, list) or not entries:
        raise ValueError(f"Datasets file '{path}' must hold a non-empty list of datasets.")
    folder = os.path.dirname(os.path.abspath(path))
    names = []
    for i, entry in enumerate(entries):
        where = f"Datasets file '{path}', entry {i}"
        if not isinstance(entry, dict) or "name" not in entry or "type" not in entry:
            raise ValueError(f"{where}: each entry needs a 'name' and a 'type'.")
        kwargs = dict(entry)
        name, kind = kwargs.pop("name"), kwargs.pop("type")
        if kind not in _HELPERS:
            raise ValueError(f"{where}: unknown type {kind!r}; use one of {sorted(_HELPERS)}.")
        for key in _PATH_ARGUMENTS & set(kwargs):
            if kwargs[key] is not None:
                kwargs[key] = os.path.join(folder, os.path.expanduser(kwargs[key]))
        try:
            _HELPERS[kind](name, **kwargs)
        except TypeError as e:
            raise ValueError(f"{where} ({name}): {e}") from e
        names.append(name)
    return names
