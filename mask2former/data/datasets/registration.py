"""Registering semantic, panoptic and instance datasets with detectron2's catalogs.

Shared by the published datasets and the custom-data helpers. Registration records paths
and metadata only; files are read (and checked) when the dataset is first loaded.
"""

import logging
import os
from typing import Callable, Dict, List, Optional, Sequence

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.utils.file_io import PathManager

from .coco_instances import load_coco_instances
from .panoptic_json import load_panoptic_json
from .paths import require_paths

__all__ = [
    "panoptic_metadata",
    "register_panoptic",
    "register_semantic",
    "register_instances",
    "register_once",
    "load_semantic_folder",
]

logger = logging.getLogger(__name__)


def register_once(name: str, loader: Callable[[], List[dict]], metadata: dict) -> bool:
    """Register `name` unless it already is (detectron2 registers some published names
    itself, and registering twice raises). Returns whether it registered."""
    if name in DatasetCatalog.list():
        logger.debug(f"Dataset '{name}' is already registered; keeping that registration.")
        return False
    DatasetCatalog.register(name, loader)
    MetadataCatalog.get(name).set(**metadata)
    return True


def panoptic_metadata(categories: Sequence[dict]) -> dict:
    """Class metadata of a panoptic dataset from COCO-panoptic-style categories
    ({"id", "name", "isthing", "color"}, in contiguous order).

    Contiguous id = position in `categories` for things and stuff alike, so the same ids
    serve panoptic, semantic (stuff_* covers every class) and instance evaluation.
    """
    things = [(i, c) for i, c in enumerate(categories) if c["isthing"]]
    return {
        "thing_classes": [c["name"] for _, c in things],
        "thing_colors": [list(c["color"]) for _, c in things],
        "stuff_classes": [c["name"] for c in categories],
        "stuff_colors": [list(c["color"]) for c in categories],
        "thing_dataset_id_to_contiguous_id": {c["id"]: i for i, c in things},
        "stuff_dataset_id_to_contiguous_id": {c["id"]: i for i, c in enumerate(categories)},
    }


def register_panoptic(
    name: str,
    metadata: dict,
    image_root: str,
    panoptic_root: str,
    panoptic_json: str,
    sem_seg_root: Optional[str] = None,
    instances_json: Optional[str] = None,
    evaluator_type: str = "coco_panoptic_seg",
    ignore_label: int = 255,
    image_ext: str = ".jpg",
    how_to_get: str = "",
) -> bool:
    """Register a COCO-format panoptic dataset (see `load_panoptic_json` for the records).

    `metadata` holds the class metadata (`panoptic_metadata`); `sem_seg_root` adds
    "sem_seg_file_name" to the records, `instances_json` sets "json_file" for AP.
    """

    def load():
        require_paths(
            name,
            {
                "image_root": image_root,
                "panoptic_json": panoptic_json,
                "panoptic_root": panoptic_root,
                "sem_seg_root": sem_seg_root,
            },
            how_to_get,
        )
        return load_panoptic_json(
            panoptic_json,
            image_root,
            panoptic_root,
            sem_seg_root,
            metadata["thing_dataset_id_to_contiguous_id"],
            metadata["stuff_dataset_id_to_contiguous_id"],
            image_ext,
        )

    extra = {"sem_seg_root": sem_seg_root} if sem_seg_root else {}
    if instances_json:
        extra["json_file"] = instances_json
    return register_once(
        name,
        load,
        dict(
            image_root=image_root,
            panoptic_root=panoptic_root,
            panoptic_json=panoptic_json,
            evaluator_type=evaluator_type,
            ignore_label=ignore_label,
            label_divisor=1000,
            **extra,
            **metadata,
        ),
    )


def load_semantic_folder(
    name: str, image_root: str, sem_seg_root: str, image_ext: str, gt_ext: str
) -> List[dict]:
    """Records pairing `image_root/X.image_ext` with `sem_seg_root/X.gt_ext`.

    Images without a label map are skipped with a warning; no pair at all is an error.
    """

    def by_stem(folder, ext):
        return {f[: -len(ext) - 1]: f for f in PathManager.ls(folder) if f.endswith("." + ext)}

    images, labels = by_stem(image_root, image_ext), by_stem(sem_seg_root, gt_ext)
    stems = sorted(images.keys() & labels.keys())
    if not stems:
        raise ValueError(
            f"Dataset '{name}': no image in '{image_root}' (*.{image_ext}) has a label "
            f"map in '{sem_seg_root}' (*.{gt_ext}) with the same name."
        )
    unlabelled = sorted(images.keys() - labels.keys())
    if unlabelled:
        logger.warning(
            f"Dataset '{name}': {len(unlabelled)} images in '{image_root}' have no label map in "
            f"'{sem_seg_root}' (e.g. '{images[unlabelled[0]]}'); they are left out."
        )
    return [
        {
            "file_name": os.path.join(image_root, images[stem]),
            "sem_seg_file_name": os.path.join(sem_seg_root, labels[stem]),
        }
        for stem in stems
    ]


def register_semantic(
    name: str,
    image_root: str,
    sem_seg_root: str,
    stuff_classes: Sequence[str],
    ignore_label: int = 255,
    image_ext: str = "jpg",
    gt_ext: str = "png",
    how_to_get: str = "",
    evaluator_type: str = "sem_seg",
    **extra_metadata,
) -> bool:
    """Register a folder pair of images and single-channel label maps matched by name."""
    image_ext, gt_ext = image_ext.lstrip("."), gt_ext.lstrip(".")

    def load():
        require_paths(name, {"image_root": image_root, "sem_seg_root": sem_seg_root}, how_to_get)
        return load_semantic_folder(name, image_root, sem_seg_root, image_ext, gt_ext)

    return register_once(
        name,
        load,
        dict(
            image_root=image_root,
            sem_seg_root=sem_seg_root,
            stuff_classes=list(stuff_classes),
            evaluator_type=evaluator_type,
            ignore_label=ignore_label,
            **extra_metadata,
        ),
    )


def register_instances(
    name: str,
    json_file: str,
    image_root: str,
    thing_classes: Sequence[str],
    thing_dataset_id_to_contiguous_id: Dict[int, int],
    evaluator_type: str = "coco",
    how_to_get: str = "",
    **extra_metadata,
) -> bool:
    """Register a COCO-format instance dataset with known categories."""

    def load():
        require_paths(name, {"image_root": image_root, "json_file": json_file}, how_to_get)
        return load_coco_instances(json_file, image_root, thing_dataset_id_to_contiguous_id)

    return register_once(
        name,
        load,
        dict(
            json_file=json_file,
            image_root=image_root,
            thing_classes=list(thing_classes),
            thing_dataset_id_to_contiguous_id=dict(thing_dataset_id_to_contiguous_id),
            evaluator_type=evaluator_type,
            **extra_metadata,
        ),
    )
