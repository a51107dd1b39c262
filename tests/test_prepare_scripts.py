"""Dataset preparation scripts on tiny inputs in the real formats, then loaded back
through the published dataset names."""

import contextlib
import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets.builtin_meta import COCO_CATEGORIES

from mask2former.config import build_config
from mask2former.data import build_dataset_mapper
from mask2former.data.datasets.builtin import register_all_published

from mask2former.data.datasets.ade20k_categories import ADE20K_150_THING_IDS
from mask2former.data.datasets.ade20k_full_categories import ADE20K_FULL_CATEGORIES
from mask2former.data.datasets.coco_stuff_categories import COCO_STUFF_CATEGORIES

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = REPO / "datasets"


def load_script(name):
    sys.path.insert(0, str(SCRIPTS))  # the scripts import prepare_utils from their folder
    try:
        spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(SCRIPTS))


ade_sem = load_script("prepare_ade20k_sem_seg")
ade_pan = load_script("prepare_ade20k_pan_seg")
ade_ins = load_script("prepare_ade20k_ins_seg")
coco_sem = load_script("prepare_coco_semantic_annos_from_panoptic")
ade_full = load_script("prepare_ade20k_full_sem_seg")
coco_stuff = load_script("prepare_coco_stuff_10k_sem_seg")

WALL, BED, CHAIR = 0, 7, 19  # 0-based SceneParsing-150 indices; bed and chair are things
BED_INSTANCE_CLASS = ADE20K_150_THING_IDS.index(BED) + 1
CHAIR_INSTANCE_CLASS = ADE20K_150_THING_IDS.index(CHAIR) + 1


def ade_arrays(h=12, w=16):
    """Original-format ADE20K labels: wall everywhere, a bed (with instance) on the left,
    a chair without an instance annotation bottom right, one "other" pixel row."""
    semantic = np.full((h, w), WALL + 1, np.uint8)
    semantic[4:10, 2:8] = BED + 1
    semantic[10:, 12:] = CHAIR + 1
    semantic[0] = 0
    instance = np.zeros((h, w, 3), np.uint8)
    instance[3:10, 2:8] = (BED_INSTANCE_CLASS, 1, 0)  # one row larger than the semantic bed
    return semantic, instance


def test_ade20k_semantic_conversion():
    label = np.array([[0, 1, 150]], np.uint8)
    assert ade_sem.convert_ade20k_label(label).tolist() == [[255, 0, 149]]
    with pytest.raises(ValueError, match="150"):
        ade_sem.convert_ade20k_label(np.array([[151]], np.uint8))


def test_ade20k_panoptic_segments():
    semantic, instance = ade_arrays()
    ids, segments = ade_pan.ade20k_panoptic(semantic, instance, "x.png")
    by_category = {s["category_id"]: s for s in segments}
    assert set(by_category) == {WALL, BED}  # the chair has no instance: unlabelled
    bed = by_category[BED]
    assert (ids[3:10, 2:8] == bed["id"]).all()  # things are pasted over stuff
    assert bed["area"] == 7 * 6 and bed["bbox"] == [2, 3, 6, 7]
    assert (ids[0] == 0).all() and (ids[10:, 12:] == 0).all()
    wall = by_category[WALL]
    assert wall["area"] == int((ids == wall["id"]).sum()) == 12 * 16 - 16 - 42 - 8
    rgb = ade_pan.id_to_rgb(ids)
    assert np.array_equal(rgb[..., 0].astype(int) + 256 * rgb[..., 1].astype(int), ids)


def test_ade20k_instance_errors_and_annotations():
    _, instance = ade_arrays()
    instance[3, 2] = (CHAIR_INSTANCE_CLASS, 1, 0)  # one instance, two classes
    with pytest.raises(ValueError, match="instance 1 has instance-class values"):
        ade_ins.ade20k_instances(instance, "bad.png")
    mask = np.zeros((5, 6), bool)
    mask[1:3, 2:5] = True
    ann = ade_ins.mask_annotation(mask)
    assert ann["area"] == 6 and ann["bbox"] == [2, 1, 3, 2]
    assert isinstance(ann["segmentation"]["counts"], str)


def test_coco_semantic_from_panoptic():
    ids = np.array([[1, 1, 2], [0, 3, 3]])
    rgb = np.stack([ids % 256, ids // 256, np.zeros_like(ids)], -1).astype(np.uint8)
    segments = [
        {"id": 1, "category_id": 1},
        {"id": 2, "category_id": 92},
        {"id": 3, "category_id": 200, "iscrowd": 1},
    ]
    mapping = {1: 0, 92: 80, 200: 132}
    out = coco_sem.semantic_from_panoptic(rgb, segments, mapping, "p.png")
    assert out.dtype == np.uint8 and out.tolist() == [[0, 0, 80], [255, 132, 132]]
    with pytest.raises(ValueError, match="unknown category_id 5"):
        coco_sem.semantic_from_panoptic(rgb, [{"id": 1, "category_id": 5}], mapping, "p.png")


def ade_full_seg_png(object_indices: np.ndarray) -> np.ndarray:
    """An ADE20K `*_seg.png` encoding (H, W) object indices: R = index // 256 * 10 (+ up
    to 9, which the format allows), G = index % 256, B = instance (ignored)."""
    r = (object_indices // 256) * 10 + 3
    g = object_indices % 256
    return np.stack([r, g, np.full_like(g, 7)], -1).astype(np.uint8)


def test_ade20k_full_label_and_shrink():
    wall, adding_machine = ADE20K_FULL_CATEGORIES[0], ADE20K_FULL_CATEGORIES[846]
    indices = np.array([[wall["id"], adding_machine["id"], 1, 0]])  # 1 is not a benchmark class
    label = ade_full.ade20k_full_label(ade_full_seg_png(indices))
    assert label.dtype == np.uint16 and label.tolist() == [[0, 846, 65535, 65535]]

    image = np.zeros((600, 900, 3), np.uint8)
    label = np.zeros((600, 900), np.uint16)
    image2, label2 = ade_full.shrink(image, label)
    assert (
        image2.shape == (512, 768, 3) and label2.shape == (512, 768) and label2.dtype == np.uint16
    )
    small = np.zeros((100, 700), np.uint16)
    assert ade_full.shrink(image[:100, :700], small)[1] is small


def write_tiny_ade20k_full(root: Path):
    folder = root / "ADE20K_2021_17_01" / "images" / "ADE"
    sky = next(c for c in ADE20K_FULL_CATEGORIES if c["name"] == "sky")
    indices = np.full((10, 12), sky["id"])
    indices[5:, :] = ADE20K_FULL_CATEGORIES[846]["id"]
    for dirname in ("training", "validation"):
        scene = folder / dirname / "outdoor" / "field"
        scene.mkdir(parents=True)
        Image.fromarray(np.full((10, 12, 3), 50, np.uint8)).save(scene / f"ADE_{dirname}_1.jpg")
        Image.fromarray(ade_full_seg_png(indices)).save(scene / f"ADE_{dirname}_1_seg.png")
    return sky["trainId"]


def test_coco_stuff_label():
    label = np.array([[0, 1, 90, 92, 182]], np.uint16)
    assert coco_stuff.coco_stuff_label(label, "x.mat").tolist() == [[255, 0, 79, 80, 170]]
    with pytest.raises(ValueError, match="x.mat: labels \\[12, 183\\]"):
        coco_stuff.coco_stuff_label(np.array([[12, 183]]), "x.mat")


def write_tiny_coco_stuff(root: Path):
    from scipy.io import savemat

    base = root / "coco" / "coco_stuff_10k"
    for sub in ("images", "annotations", "imageLists"):
        (base / sub).mkdir(parents=True)
    for split in ("train", "test"):
        stem = f"COCO_{split}2014_000000000001"
        Image.fromarray(np.zeros((8, 10, 3), np.uint8)).save(base / "images" / f"{stem}.jpg")
        label = np.zeros((8, 10), np.uint8)
        label[:, 5:] = 157  # sky-other
        label[:4, :5] = 1  # person
        savemat(base / "annotations" / f"{stem}.mat", {"S": label})
        (base / "imageLists" / f"{split}.txt").write_text(stem + "\n")


def write_tiny_ade20k(root: Path):
    base = root / "ADEChallengeData2016"
    semantic, instance = ade_arrays()
    for dirname in ("training", "validation"):
        for sub in ("images", "annotations", "annotations_instance"):
            (base / sub / dirname).mkdir(parents=True)
        for stem in (f"ADE_{dirname}_1", f"ADE_{dirname}_2"):
            Image.fromarray(np.full((12, 16, 3), 90, np.uint8)).save(
                base / "images" / dirname / f"{stem}.jpg"
            )
            Image.fromarray(semantic).save(base / "annotations" / dirname / f"{stem}.png")
            Image.fromarray(instance).save(base / "annotations_instance" / dirname / f"{stem}.png")


def write_tiny_coco(root: Path):
    base = root / "coco"
    for sub in ("annotations", "val2017", "panoptic_val2017"):
        (base / sub).mkdir(parents=True)
    ids = np.zeros((10, 14), np.int64)
    ids[:, :7] = 5  # person (category 1)
    ids[:, 7:] = 300  # sky-other-merged (category 187)
    Image.fromarray(np.stack([ids % 256, ids // 256, ids * 0], -1).astype(np.uint8)).save(
        base / "panoptic_val2017" / "000000000001.png"
    )
    Image.fromarray(np.zeros((10, 14, 3), np.uint8)).save(base / "val2017" / "000000000001.jpg")
    panoptic = {
        "images": [{"id": 1, "file_name": "000000000001.jpg", "height": 10, "width": 14}],
        "annotations": [
            {
                "image_id": 1,
                "file_name": "000000000001.png",
                "segments_info": [
                    {"id": 5, "category_id": 1, "iscrowd": 0, "area": 70, "bbox": [0, 0, 7, 10]},
                    {
                        "id": 300,
                        "category_id": 187,
                        "iscrowd": 0,
                        "area": 70,
                        "bbox": [7, 0, 7, 10],
                    },
                ],
            }
        ],
        "categories": COCO_CATEGORIES,
    }
    (base / "annotations" / "panoptic_val2017.json").write_text(json.dumps(panoptic))


def test_scripts_end_to_end_and_loaded_by_published_names(tmp_path, monkeypatch):
    root = tmp_path / "datasets"
    write_tiny_ade20k(root)
    write_tiny_coco(root)
    ade_sky = write_tiny_ade20k_full(root)
    write_tiny_coco_stuff(root)
    monkeypatch.setenv("DETECTRON2_DATASETS", str(root))
    ade_full.main()
    coco_stuff.main()

    ade_sem.main()
    ade_pan.main()
    ade_ins.main()
    base = root / "ADEChallengeData2016"
    label = np.asarray(Image.open(base / "annotations_detectron2/validation/ADE_validation_1.png"))
    assert label[0, 0] == 255 and label[5, 3] == BED and label[11, 13] == CHAIR
    instances = json.loads((base / "ade20k_instance_val.json").read_text())
    assert len(instances["images"]) == 2 and len(instances["annotations"]) == 2
    assert {a["category_id"] for a in instances["annotations"]} == {BED}
    assert len(instances["categories"]) == 100
    # reruns skip finished files; nothing half-written is left behind
    ade_sem.main()
    leftovers = [p for p in root.rglob(".tmp-*")]
    assert not leftovers

    coco_sem.convert_split(
        str(root / "coco/annotations/panoptic_val2017.json"),
        str(root / "coco/panoptic_val2017"),
        str(root / "coco/panoptic_semseg_val2017"),
        workers=1,
    )
    semseg = np.asarray(Image.open(root / "coco/panoptic_semseg_val2017/000000000001.png"))
    sky = [c["id"] for c in COCO_CATEGORIES].index(187)
    assert (semseg[:, :7] == 0).all() and (semseg[:, 7:] == sky).all()

    # Load through the published names, registered under this dataset root.
    names = {
        "ade20k_sem_seg_val": None,
        "ade20k_panoptic_val": "mask_former_panoptic",
        "ade20k_instance_val": "mask_former_instance",
        "coco_2017_val_panoptic_with_sem_seg": "coco_panoptic_lsj",
        "ade20k_full_sem_seg_val": "mask_former_semantic",
        "coco_2017_test_stuff_10k_sem_seg": "mask_former_semantic",
    }
    result = {}
    with published_datasets_under(root, names):
        for name, mapper_name in names.items():
            records = DatasetCatalog.get(name)
            result[name] = len(records)
            if mapper_name:
                cfg = mapper_cfg(name, mapper_name)
                record = build_dataset_mapper(cfg, True)(records[0])
                result[name + ":classes"] = sorted(record["instances"].gt_classes.tolist())
    assert result["ade20k_sem_seg_val"] == result["ade20k_panoptic_val"] == 2
    assert result["ade20k_instance_val"] == 2
    assert result["ade20k_panoptic_val:classes"] == [WALL, BED]
    assert result["ade20k_instance_val:classes"] == [0]  # bed is the first instance class
    assert result["coco_2017_val_panoptic_with_sem_seg:classes"] == [0, sky]
    assert result["ade20k_full_sem_seg_val"] == 1
    assert result["ade20k_full_sem_seg_val:classes"] == [ade_sky, 846]
    sky_other = [c["name"] for c in COCO_STUFF_CATEGORIES].index("sky-other")
    assert result["coco_2017_test_stuff_10k_sem_seg:classes"] == [0, sky_other]
    # the published registrations are back as they were
    assert not MetadataCatalog.get("ade20k_panoptic_val").image_root.startswith(str(root))


def mapper_cfg(dataset_name, mapper_name):
    cfg = build_config()
    cfg.DATASETS.TRAIN = (dataset_name,)
    cfg.INPUT.DATASET_MAPPER_NAME = mapper_name
    cfg.INPUT.MIN_SIZE_TRAIN = (12,)
    cfg.INPUT.IMAGE_SIZE = 32
    cfg.INPUT.RANDOM_FLIP = "none"
    cfg.INPUT.MIN_SCALE = cfg.INPUT.MAX_SCALE = 1.0
    return cfg


@contextlib.contextmanager
def published_datasets_under(root: Path, names):
    """Temporarily register the published `names` with `root` as dataset root, restoring
    the original registrations afterwards."""
    saved = {name: (DatasetCatalog[name], MetadataCatalog.get(name).as_dict()) for name in names}

    def unregister():
        for name in names:
            DatasetCatalog.remove(name)
            MetadataCatalog.remove(name)

    unregister()
    try:
        register_all_published(str(root))  # registers only the names just removed
        yield
    finally:
        unregister()
        for name, (loader, metadata) in saved.items():
            DatasetCatalog.register(name, loader)
            MetadataCatalog.get(name).set(**{k: v for k, v in metadata.items() if k != "name"})
