"""Registration of the published datasets: names, metadata, errors, no disk access."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import mask2former  # noqa: F401  (registers the datasets)
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets.builtin_meta import COCO_CATEGORIES

from mask2former.data.datasets import DatasetNotFoundError
from mask2former.data.datasets.ade20k_categories import ADE20K_150_THING_IDS, ade20k_150_categories
from mask2former.data.datasets.mapillary_vistas_categories import MAPILLARY_VISTAS_CATEGORIES

REFERENCE = Path(__file__).resolve().parent / "reference"

OUR_NAMES = [
    f"{prefix}_{split}"
    for prefix, splits in [
        ("ade20k_panoptic", ("train", "val")),
        ("ade20k_instance", ("train", "val")),
        ("ade20k_full_sem_seg", ("train", "val")),
        ("mapillary_vistas_sem_seg", ("train", "val")),
        ("mapillary_vistas_panoptic", ("train", "val")),
    ]
    for split in splits
] + [
    "coco_2017_train_panoptic_with_sem_seg",
    "coco_2017_val_panoptic_with_sem_seg",
    "coco_2017_train_stuff_10k_sem_seg",
    "coco_2017_test_stuff_10k_sem_seg",
]

PANOPTIC_KEYS = {
    "evaluator_type",
    "ignore_label",
    "label_divisor",
    "image_root",
    "panoptic_root",
    "panoptic_json",
    "thing_classes",
    "stuff_classes",
    "thing_dataset_id_to_contiguous_id",
    "stuff_dataset_id_to_contiguous_id",
}


def published_dataset_names():
    path = REFERENCE / "effective_configs.json"
    configs = json.loads(path.read_text())["configs"]
    names = set()
    for values in configs.values():
        names.update(values.get("DATASETS.TRAIN", []))
        names.update(values.get("DATASETS.TEST", []))
    return sorted(names)


def test_every_published_dataset_name_is_registered():
    registered = set(DatasetCatalog.list())
    names = published_dataset_names()
    assert len(names) >= 20
    assert not [n for n in names if n not in registered]
    for name in names:
        assert MetadataCatalog.get(name).get("evaluator_type"), name


def test_our_names_and_metadata():
    registered = set(DatasetCatalog.list())
    for name in OUR_NAMES:
        assert name in registered, name
        meta = MetadataCatalog.get(name).as_dict()
        if "panoptic" in name:
            assert PANOPTIC_KEYS <= set(meta), (name, PANOPTIC_KEYS - set(meta))
            assert "sem_seg_root" in meta
        elif "instance" in name:
            assert {
                "json_file",
                "image_root",
                "thing_classes",
                "thing_dataset_id_to_contiguous_id",
            } <= set(meta)
        else:
            assert {"sem_seg_root", "image_root", "stuff_classes", "ignore_label"} <= set(meta)


def test_coco_panoptic_with_sem_seg_metadata_matches_detectron2_panoptic():
    ours = MetadataCatalog.get("coco_2017_val_panoptic_with_sem_seg")
    theirs = MetadataCatalog.get("coco_2017_val_panoptic")
    assert ours.evaluator_type == "coco_panoptic_seg"
    assert ours.json_file.endswith("instances_val2017.json")
    assert ours.sem_seg_root.endswith("panoptic_semseg_val2017")
    assert len(ours.stuff_classes) == 133 and len(ours.thing_classes) == 80
    # The same contiguous ids as detectron2's plain panoptic registration (what the
    # published checkpoints were trained with).
    assert ours.thing_dataset_id_to_contiguous_id == theirs.thing_dataset_id_to_contiguous_id
    for dataset_id, contiguous in theirs.stuff_dataset_id_to_contiguous_id.items():
        assert ours.stuff_dataset_id_to_contiguous_id[dataset_id] == contiguous
    assert ours.stuff_classes == [c["name"] for c in COCO_CATEGORIES]


def test_ade20k_metadata():
    pan = MetadataCatalog.get("ade20k_panoptic_val")
    assert pan.evaluator_type == "ade20k_panoptic_seg" and pan.ignore_label == 255
    assert len(pan.stuff_classes) == 150 and len(pan.thing_classes) == 100
    assert pan.stuff_classes == MetadataCatalog.get("ade20k_sem_seg_val").stuff_classes
    assert sorted(pan.thing_dataset_id_to_contiguous_id.values()) == ADE20K_150_THING_IDS
    assert pan.json_file.endswith("ade20k_instance_val.json")
    ins = MetadataCatalog.get("ade20k_instance_val")
    assert ins.evaluator_type == "ade20k_instance"
    assert sorted(ins.thing_dataset_id_to_contiguous_id.values()) == list(range(100))
    assert list(ins.thing_dataset_id_to_contiguous_id) == ADE20K_150_THING_IDS
    assert len(MetadataCatalog.get("ade20k_sem_seg_train").stuff_colors) == 150
    categories = ade20k_150_categories()
    assert [c["name"] for c in categories if c["isthing"]][:3] == ["bed", "window ", "cabinet"]


def test_ade20k_full_metadata():
    meta = MetadataCatalog.get("ade20k_full_sem_seg_train")
    assert meta.evaluator_type == "sem_seg" and meta.ignore_label == 65535
    assert len(meta.stuff_classes) == 847
    assert meta.stuff_classes[0] == "wall" and meta.stuff_classes[-1].startswith("adding machine")


def test_mapillary_vistas_metadata():
    sem = MetadataCatalog.get("mapillary_vistas_sem_seg_val")
    pan = MetadataCatalog.get("mapillary_vistas_panoptic_val")
    assert sem.ignore_label == pan.ignore_label == 65
    assert len(sem.stuff_classes) == 65 and sem.evaluator_type == "sem_seg"
    assert pan.evaluator_type == "mapillary_vistas_panoptic_seg"
    assert pan.stuff_dataset_id_to_contiguous_id == {i + 1: i for i in range(65)}
    assert len(pan.thing_classes) == sum(c["isthing"] for c in MAPILLARY_VISTAS_CATEGORIES) == 37
    assert pan.panoptic_json.endswith(os.path.join("validation", "panoptic", "panoptic_2018.json"))


@pytest.mark.parametrize(
    "name, missing",
    [
        ("ade20k_panoptic_val", "ADEChallengeData2016"),
        ("ade20k_instance_train", "ADEChallengeData2016"),
        ("coco_2017_val_panoptic_with_sem_seg", "coco"),
        ("mapillary_vistas_sem_seg_val", "mapillary_vistas"),
        ("coco_2017_test_stuff_10k_sem_seg", "coco_stuff_10k"),
        ("ade20k_full_sem_seg_val", "ADE20K_2021_17_01"),
        # registered by detectron2; the missing-path error is added to its loader
        ("coco_2017_val", "coco"),
        ("coco_2017_train_panoptic", "coco"),
        ("cityscapes_fine_sem_seg_val", "cityscapes"),
        ("cityscapes_fine_panoptic_train", "cityscapes"),
        ("ade20k_sem_seg_val", "ADEChallengeData2016"),
    ],
)
def test_loading_a_missing_dataset_names_the_folder_and_readme(
    name, missing, tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)  # the default root "datasets" is relative to the cwd
    meta = MetadataCatalog.get(name)
    root = meta.get("image_root") or meta.get("image_dir")
    if os.path.isabs(root):
        pytest.skip(
            f"DETECTRON2_DATASETS is set to an absolute path ({root}); this checks the default"
        )
    with pytest.raises(DatasetNotFoundError) as info:
        DatasetCatalog.get(name)
    message = str(info.value)
    assert name in message and missing in message and "datasets/README.md" in message
    assert not (tmp_path / "datasets").exists()


def test_detectron2_loader_still_used_when_files_exist(tmp_path, monkeypatch):
    import numpy as np
    from PIL import Image

    monkeypatch.chdir(tmp_path)
    images = tmp_path / "datasets/ADEChallengeData2016/images/validation"
    labels = tmp_path / "datasets/ADEChallengeData2016/annotations_detectron2/validation"
    images.mkdir(parents=True)
    labels.mkdir(parents=True)
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(images / "ADE_val_1.jpg")
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(labels / "ADE_val_1.png")
    if os.path.isabs(MetadataCatalog.get("ade20k_sem_seg_val").image_root):
        pytest.skip("DETECTRON2_DATASETS is set to an absolute path; this checks the default")
    (record,) = DatasetCatalog.get("ade20k_sem_seg_val")
    assert record["file_name"].endswith("ADE_val_1.jpg")
    assert record["sem_seg_file_name"].endswith("ADE_val_1.png")


def test_import_touches_no_dataset_path(tmp_path):
    """In a fresh process, record every file-system call detectron2's PathManager and os
    make on the dataset root while importing the package."""
    root = tmp_path / "nowhere"
    code = f"""
import os, builtins
ROOT = {str(root)!r}
touched = []
from detectron2.utils.file_io import PathManager
for method in ("open", "exists", "isfile", "isdir", "ls", "mkdirs"):
    original = getattr(PathManager, method)
    def spy(path, *a, _original=original, **k):
        if str(path).startswith(ROOT):
            touched.append(str(path))
        return _original(path, *a, **k)
    setattr(PathManager, method, spy)
for name in ("listdir", "scandir", "makedirs", "mkdir", "stat"):
    original = getattr(os, name)
    def spy(path=".", *a, _original=original, **k):
        if str(path).startswith(ROOT):
            touched.append(str(path))
        return _original(path, *a, **k)
    setattr(os, name, spy)
import mask2former
from detectron2.data import DatasetCatalog
assert "ade20k_panoptic_val" in DatasetCatalog.list()
print("TOUCHED", touched)
"""
    env = {**os.environ, "DETECTRON2_DATASETS": str(root)}
    proc = subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "TOUCHED []" in proc.stdout
    assert not root.exists()
