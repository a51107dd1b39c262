"""The published datasets, registered under the names the published configs use.

Paths are relative to $DETECTRON2_DATASETS (default "datasets"); datasets/README.md
describes each layout. Names that detectron2 already registers (coco_2017_*,
coco_2017_*_panoptic, ade20k_sem_seg_*, cityscapes_fine_*) keep detectron2's
registration; only metadata they lack (ADE20K colours) is added.
"""

import os

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets.builtin_meta import COCO_CATEGORIES

from .ade20k_categories import ADE20K_150_CLASSES, ADE20K_150_COLORS, ade20k_150_categories
from .ade20k_full_categories import ADE20K_FULL_CATEGORIES, ADE20K_FULL_IGNORE_LABEL
from .coco_stuff_categories import COCO_STUFF_CATEGORIES
from .mapillary_vistas_categories import MAPILLARY_VISTAS_CATEGORIES, MAPILLARY_VISTAS_IGNORE_LABEL
from .paths import dataset_root, require_paths
from .registration import (
    panoptic_metadata,
    register_instances,
    register_panoptic,
    register_semantic,
)

__all__ = ["register_all_published"]

_HOW_TO_GET_COCO = (
    "Download the COCO 2017 images and the panoptic/instance annotations from "
    "https://cocodataset.org/#download into coco/, then run "
    "`python datasets/prepare_coco_semantic_annos_from_panoptic.py` for panoptic_semseg_*."
)
_HOW_TO_GET_COCO_STUFF = (
    "Unzip COCO-Stuff-10k (cocostuff-10k-v1.1.zip) into coco/coco_stuff_10k/ and run "
    "datasets/prepare_coco_stuff_10k_sem_seg.py."
)
_HOW_TO_GET_ADE = (
    "Download ADEChallengeData2016.zip (and annotations_instance.tar for panoptic/instance) "
    "from http://sceneparsing.csail.mit.edu, then run datasets/prepare_ade20k_sem_seg.py, "
    "prepare_ade20k_pan_seg.py and prepare_ade20k_ins_seg.py."
)
_HOW_TO_GET_ADE_FULL = (
    "Download ADE20K_2021_17_01 from https://groups.csail.mit.edu/vision/datasets/ADE20K/ "
    "and run datasets/prepare_ade20k_full_sem_seg.py."
)
_HOW_TO_GET_VISTAS = (
    "Download Mapillary Vistas v1.2 from https://www.mapillary.com/dataset/vistas into "
    "mapillary_vistas/ (training/ and validation/ with images/, labels/, panoptic/)."
)

_HOW_TO_GET_CITYSCAPES = (
    "Download gtFine_trainvaltest.zip and leftImg8bit_trainvaltest.zip from "
    "https://www.cityscapes-dataset.com/downloads/ into cityscapes/, then create the "
    "labelTrainIds / panoptic files with cityscapesScripts."
)

_SPLITS = {"train": "training", "val": "validation"}

# Names detectron2 registers, with the metadata fields naming the paths its loader reads.
_DETECTRON2_DATASETS = {
    **{f"coco_2017_{s}": (("image_root", "json_file"), _HOW_TO_GET_COCO) for s in ("train", "val")},
    **{
        f"coco_2017_{s}_panoptic": (
            ("image_root", "panoptic_json", "panoptic_root"),
            _HOW_TO_GET_COCO,
        )
        for s in ("train", "val")
    },
    **{
        f"cityscapes_fine_{task}_{s}": (("image_dir", "gt_dir"), _HOW_TO_GET_CITYSCAPES)
        for task in ("sem_seg", "instance_seg")
        for s in ("train", "val")
    },
    **{
        f"cityscapes_fine_panoptic_{s}": (
            ("image_root", "gt_dir", "panoptic_json", "panoptic_root"),
            _HOW_TO_GET_CITYSCAPES,
        )
        for s in ("train", "val")
    },
    **{f"ade20k_sem_seg_{s}": (("image_root", "sem_seg_root"), _HOW_TO_GET_ADE) for s in _SPLITS},
}


def _add_missing_path_errors():
    """Make detectron2's registrations of published names fail like ours when their files
    are missing (naming the path and what to download), keeping detectron2's loader."""
    for name, (fields, how_to_get) in _DETECTRON2_DATASETS.items():
        if name not in DatasetCatalog.list():
            continue
        loader = DatasetCatalog[name]
        if getattr(loader, "checks_paths", False):
            continue  # already wrapped
        metadata = MetadataCatalog.get(name)
        paths = {field: metadata.get(field) for field in fields if metadata.get(field)}

        def load(name=name, loader=loader, paths=paths, how_to_get=how_to_get):
            require_paths(name, paths, how_to_get)
            return loader()

        load.checks_paths = True
        DatasetCatalog.remove(name)
        DatasetCatalog.register(name, load)


def _register_coco(root: str):
    metadata = panoptic_metadata(COCO_CATEGORIES)
    for split in ("train", "val"):
        common = dict(
            metadata=metadata,
            image_root=os.path.join(root, f"coco/{split}2017"),
            panoptic_root=os.path.join(root, f"coco/panoptic_{split}2017"),
            panoptic_json=os.path.join(root, f"coco/annotations/panoptic_{split}2017.json"),
            instances_json=os.path.join(root, f"coco/annotations/instances_{split}2017.json"),
            evaluator_type="coco_panoptic_seg",
            how_to_get=_HOW_TO_GET_COCO,
        )
        # detectron2 registers the plain name; this is a fallback for the same layout.
        register_panoptic(f"coco_2017_{split}_panoptic", **common)
        register_panoptic(
            f"coco_2017_{split}_panoptic_with_sem_seg",
            sem_seg_root=os.path.join(root, f"coco/panoptic_semseg_{split}2017"),
            **common,
        )

    for split in ("train", "test"):
        register_semantic(
            f"coco_2017_{split}_stuff_10k_sem_seg",
            image_root=os.path.join(root, f"coco/coco_stuff_10k/images_detectron2/{split}"),
            sem_seg_root=os.path.join(root, f"coco/coco_stuff_10k/annotations_detectron2/{split}"),
            stuff_classes=[c["name"] for c in COCO_STUFF_CATEGORIES],
            stuff_colors=[c["color"] for c in COCO_STUFF_CATEGORIES],
            stuff_dataset_id_to_contiguous_id={
                c["id"]: i for i, c in enumerate(COCO_STUFF_CATEGORIES)
            },
            how_to_get=_HOW_TO_GET_COCO_STUFF,
        )


def _register_ade20k(root: str):
    categories = ade20k_150_categories()
    metadata = panoptic_metadata(categories)
    things = [c for c in categories if c["isthing"]]
    base = os.path.join(root, "ADEChallengeData2016")
    for split, dirname in _SPLITS.items():
        image_root = os.path.join(base, f"images/{dirname}")
        sem_seg_root = os.path.join(base, f"annotations_detectron2/{dirname}")
        register_semantic(  # detectron2 registers these; fallback for the same layout
            f"ade20k_sem_seg_{split}",
            image_root=image_root,
            sem_seg_root=sem_seg_root,
            stuff_classes=ADE20K_150_CLASSES,
            how_to_get=_HOW_TO_GET_ADE,
        )
        meta = MetadataCatalog.get(f"ade20k_sem_seg_{split}")
        if "stuff_colors" not in meta.as_dict():
            meta.set(stuff_colors=[list(c) for c in ADE20K_150_COLORS])
        register_panoptic(
            f"ade20k_panoptic_{split}",
            metadata=metadata,
            image_root=image_root,
            panoptic_root=os.path.join(base, f"ade20k_panoptic_{split}"),
            panoptic_json=os.path.join(base, f"ade20k_panoptic_{split}.json"),
            sem_seg_root=sem_seg_root,
            instances_json=os.path.join(base, f"ade20k_instance_{split}.json"),
            evaluator_type="ade20k_panoptic_seg",
            how_to_get=_HOW_TO_GET_ADE,
        )
        register_instances(
            f"ade20k_instance_{split}",
            json_file=os.path.join(base, f"ade20k_instance_{split}.json"),
            image_root=image_root,
            thing_classes=[c["name"] for c in things],
            thing_dataset_id_to_contiguous_id={c["id"]: i for i, c in enumerate(things)},
            thing_colors=[c["color"] for c in things],
            evaluator_type="ade20k_instance",
            how_to_get=_HOW_TO_GET_ADE,
        )


def _register_ade20k_full(root: str):
    base = os.path.join(root, "ADE20K_2021_17_01")
    for split, dirname in _SPLITS.items():
        register_semantic(
            f"ade20k_full_sem_seg_{split}",
            image_root=os.path.join(base, f"images_detectron2/{dirname}"),
            sem_seg_root=os.path.join(base, f"annotations_detectron2/{dirname}"),
            stuff_classes=[c["name"] for c in ADE20K_FULL_CATEGORIES],
            ignore_label=ADE20K_FULL_IGNORE_LABEL,
            gt_ext="tif",
            how_to_get=_HOW_TO_GET_ADE_FULL,
        )


def _register_mapillary_vistas(root: str):
    categories = MAPILLARY_VISTAS_CATEGORIES
    metadata = panoptic_metadata(categories)
    for split, dirname in _SPLITS.items():
        base = os.path.join(root, f"mapillary_vistas/{dirname}")
        register_semantic(
            f"mapillary_vistas_sem_seg_{split}",
            image_root=os.path.join(base, "images"),
            sem_seg_root=os.path.join(base, "labels"),
            stuff_classes=[c["name"] for c in categories],
            stuff_colors=[c["color"] for c in categories],
            ignore_label=MAPILLARY_VISTAS_IGNORE_LABEL,
            how_to_get=_HOW_TO_GET_VISTAS,
        )
        register_panoptic(
            f"mapillary_vistas_panoptic_{split}",
            metadata=metadata,
            image_root=os.path.join(base, "images"),
            panoptic_root=os.path.join(base, "panoptic"),
            panoptic_json=os.path.join(base, "panoptic/panoptic_2018.json"),
            sem_seg_root=os.path.join(base, "labels"),
            evaluator_type="mapillary_vistas_panoptic_seg",
            ignore_label=MAPILLARY_VISTAS_IGNORE_LABEL,
            how_to_get=_HOW_TO_GET_VISTAS,
        )


def register_all_published(root: str):
    """Register every published dataset name under `root` (paths only, no disk access)."""
    _register_coco(root)
    _register_ade20k(root)
    _register_ade20k_full(root)
    _register_mapillary_vistas(root)
    _add_missing_path_errors()


register_all_published(dataset_root())
