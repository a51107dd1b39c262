"""Custom-data helpers end to end on generated files: register, load, map."""

import importlib
import json
import subprocess
import sys
import uuid
from pathlib import Path

import numpy as np
import pycocotools.mask as mask_util
import pytest
from PIL import Image

from detectron2.data import DatasetCatalog, MetadataCatalog
from panopticapi.utils import id2rgb

from mask2former.config import build_config
from mask2former.data import build_dataset_mapper
from mask2former.data.datasets import (
    register_coco_instances_dataset,
    register_coco_panoptic_dataset,
    register_datasets_from_file,
    register_semantic_folder,
)


@pytest.fixture
def dataset_name():
    """A fresh dataset name, unregistered again after the test."""
    name = f"custom_{uuid.uuid4().hex[:8]}"
    yield name
    if name in DatasetCatalog.list():
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)


def mapper_for(name, mapper_name):
    cfg = build_config()
    cfg.DATASETS.TRAIN = (name,)
    cfg.INPUT.DATASET_MAPPER_NAME = mapper_name
    cfg.INPUT.MIN_SIZE_TRAIN = (16,)
    cfg.INPUT.RANDOM_FLIP = "none"
    cfg.INPUT.IMAGE_SIZE = 20  # LSJ at scale 1 keeps the 16x20 test images as they are
    cfg.INPUT.MIN_SCALE = cfg.INPUT.MAX_SCALE = 1.0
    return build_dataset_mapper(cfg, True)


def write_image(path, h=16, w=20):
    Image.fromarray(np.full((h, w, 3), 100, np.uint8)).save(path)


def test_semantic_folder_end_to_end(tmp_path, dataset_name):
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    for stem in ("a", "b"):
        write_image(tmp_path / "images" / f"{stem}.jpg")
        mask = np.zeros((16, 20), np.uint8)
        mask[:, 10:] = 1
        mask[0] = 255
        Image.fromarray(mask).save(tmp_path / "masks" / f"{stem}.png")

    register_semantic_folder(
        dataset_name, str(tmp_path / "images"), str(tmp_path / "masks"), ["apple", "pear"]
    )
    meta = MetadataCatalog.get(dataset_name)
    assert meta.evaluator_type == "sem_seg" and meta.ignore_label == 255
    assert meta.stuff_classes == ["apple", "pear"] and len(meta.stuff_colors) == 2
    records = DatasetCatalog.get(dataset_name)
    assert [r["file_name"].rsplit("/", 1)[-1] for r in records] == ["a.jpg", "b.jpg"]
    out = mapper_for(dataset_name, "mask_former_semantic")(records[0])
    assert out["instances"].gt_classes.tolist() == [0, 1]

    # a mask with a class the list does not have is reported with its file
    bad = np.full((16, 20), 2, np.uint8)
    Image.fromarray(bad).save(tmp_path / "masks" / "b.png")
    with pytest.raises(ValueError, match="b.png.*labels \\[2\\]"):
        mapper_for(dataset_name, "mask_former_semantic")(records[1])


def test_semantic_folder_argument_errors(tmp_path, dataset_name):
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    with pytest.raises(FileNotFoundError, match="mask_dir"):
        register_semantic_folder(
            dataset_name, str(tmp_path / "images"), str(tmp_path / "nope"), ["a"]
        )
    with pytest.raises(ValueError, match="ignore_label 0"):
        register_semantic_folder(
            dataset_name, str(tmp_path / "images"), str(tmp_path / "masks"), ["a"], ignore_label=0
        )
    register_semantic_folder(dataset_name, str(tmp_path / "images"), str(tmp_path / "masks"), ["a"])
    with pytest.raises(ValueError, match="no image"):
        DatasetCatalog.get(dataset_name)  # empty folders
    with pytest.raises(ValueError, match="already registered"):
        register_semantic_folder(
            dataset_name, str(tmp_path / "images"), str(tmp_path / "masks"), ["a"]
        )


def coco_instance_json(path, category_ids=(3, 9), annotation_category=9, images=True):
    mask = np.zeros((16, 20), np.uint8)
    mask[4:12, 10:18] = 1
    rle = mask_util.encode(np.asfortranarray(mask))
    rle["counts"] = rle["counts"].decode()
    data = {
        "images": [{"id": 1, "file_name": "a.jpg", "height": 16, "width": 20}] if images else [],
        "annotations": [
            {
                "id": 1,
                "image_id": 1,
                "category_id": 3,
                "iscrowd": 0,
                "bbox": [1, 1, 5, 5],
                "area": 25,
                "segmentation": [[1, 1, 6, 1, 6, 6, 1, 6]],
            },
            {
                "id": 2,
                "image_id": 1,
                "category_id": annotation_category,
                "iscrowd": 0,
                "bbox": [10, 4, 8, 8],
                "area": 64,
                "segmentation": rle,
            },
        ],
        "categories": [{"id": c, "name": f"part{c}"} for c in category_ids],
    }
    path.write_text(json.dumps(data))


def test_coco_instances_end_to_end(tmp_path, dataset_name):
    write_image(tmp_path / "a.jpg")
    coco_instance_json(tmp_path / "train.json")
    register_coco_instances_dataset(dataset_name, str(tmp_path / "train.json"), str(tmp_path))
    meta = MetadataCatalog.get(dataset_name)
    assert meta.evaluator_type == "coco" and meta.thing_classes == ["part3", "part9"]
    assert meta.thing_dataset_id_to_contiguous_id == {3: 0, 9: 1}
    records = DatasetCatalog.get(dataset_name)
    assert [a["category_id"] for a in records[0]["annotations"]] == [0, 1]
    for mapper_name in ("mask_former_instance", "coco_instance_lsj"):
        out = mapper_for(dataset_name, mapper_name)(records[0])
        assert out["instances"].gt_classes.tolist() == [0, 1]
        assert int(out["instances"].gt_masks.tensor[1].sum()) > 0


def test_coco_instances_bad_files(tmp_path, dataset_name):
    write_image(tmp_path / "a.jpg")
    (tmp_path / "empty.json").write_text("{}")
    with pytest.raises(ValueError, match="empty.json.*categories"):
        register_coco_instances_dataset(dataset_name, str(tmp_path / "empty.json"), str(tmp_path))
    (tmp_path / "broken.json").write_text("{not json")
    with pytest.raises(ValueError, match="broken.json.*not valid JSON"):
        register_coco_instances_dataset(dataset_name, str(tmp_path / "broken.json"), str(tmp_path))

    coco_instance_json(tmp_path / "no_images.json", images=False)
    register_coco_instances_dataset(dataset_name, str(tmp_path / "no_images.json"), str(tmp_path))
    with pytest.raises(ValueError, match="no_images.json.*no 'images'"):
        DatasetCatalog.get(dataset_name)


def test_coco_instances_unknown_category(tmp_path, dataset_name):
    write_image(tmp_path / "a.jpg")
    coco_instance_json(tmp_path / "train.json", annotation_category=42)
    register_coco_instances_dataset(dataset_name, str(tmp_path / "train.json"), str(tmp_path))
    with pytest.raises(ValueError, match="category_id 42"):
        DatasetCatalog.get(dataset_name)


@pytest.mark.parametrize("with_sem_seg", [False, True])
def test_coco_panoptic_end_to_end(tmp_path, dataset_name, with_sem_seg):
    for sub in ("images", "panoptic", "semantic"):
        (tmp_path / sub).mkdir()
    write_image(tmp_path / "images" / "a.jpg")
    ids = np.zeros((16, 20), np.int64)
    ids[:, :10] = 1000  # road (stuff, dataset id 50)
    ids[4:12, 12:18] = 7  # a car (thing, dataset id 3)
    Image.fromarray(id2rgb(ids)).save(tmp_path / "panoptic" / "a.png")
    semantic = np.where(ids == 1000, 1, np.where(ids == 7, 0, 255)).astype(np.uint8)
    Image.fromarray(semantic).save(tmp_path / "semantic" / "a.png")
    data = {
        "images": [{"id": 5, "file_name": "a.jpg", "height": 16, "width": 20}],
        "annotations": [
            {
                "image_id": 5,
                "file_name": "a.png",
                "segments_info": [
                    {"id": 7, "category_id": 3, "iscrowd": 0},
                    {"id": 1000, "category_id": 50, "iscrowd": 0},
                ],
            }
        ],
        "categories": [
            {"id": 50, "name": "road", "isthing": 0},
            {"id": 3, "name": "car", "isthing": 1},
        ],
    }
    (tmp_path / "panoptic.json").write_text(json.dumps(data))

    register_coco_panoptic_dataset(
        dataset_name,
        str(tmp_path / "images"),
        str(tmp_path / "panoptic"),
        str(tmp_path / "panoptic.json"),
        sem_seg_root=str(tmp_path / "semantic") if with_sem_seg else None,
    )
    meta = MetadataCatalog.get(dataset_name)
    assert meta.evaluator_type == "coco_panoptic_seg"
    assert meta.stuff_classes == ["car", "road"] and meta.thing_classes == ["car"]
    assert meta.thing_dataset_id_to_contiguous_id == {3: 0}
    assert meta.stuff_dataset_id_to_contiguous_id == {3: 0, 50: 1}
    (record,) = DatasetCatalog.get(dataset_name)
    assert record["height"] == 16 and ("sem_seg_file_name" in record) == with_sem_seg
    assert {(s["category_id"], s["isthing"]) for s in record["segments_info"]} == {
        (0, True),
        (1, False),
    }
    for mapper_name in ("mask_former_panoptic", "coco_panoptic_lsj"):
        out = mapper_for(dataset_name, mapper_name)(record)
        assert out["instances"].gt_classes.tolist() == [0, 1]
        sem = out["sem_seg"]
        assert (sem[4:12, 12:18] == 0).all() and (sem[:16, :10] == 1).all() and sem[0, 19] == 255


def test_coco_panoptic_unknown_category(tmp_path, dataset_name):
    for sub in ("images", "panoptic"):
        (tmp_path / sub).mkdir()
    data = {
        "images": [],
        "annotations": [
            {"image_id": 1, "file_name": "a.png", "segments_info": [{"id": 1, "category_id": 8}]}
        ],
        "categories": [{"id": 1, "name": "x", "isthing": 1}],
    }
    (tmp_path / "p.json").write_text(json.dumps(data))
    register_coco_panoptic_dataset(
        dataset_name, str(tmp_path / "images"), str(tmp_path / "panoptic"), str(tmp_path / "p.json")
    )
    with pytest.raises(ValueError, match="p.json.*category_id 8"):
        DatasetCatalog.get(dataset_name)


def write_fruit(folder):
    (folder / "images").mkdir()
    (folder / "masks").mkdir()
    write_image(folder / "images" / "a.jpg")
    mask = np.zeros((16, 20), np.uint8)
    mask[:, 10:] = 1
    Image.fromarray(mask).save(folder / "masks" / "a.png")


def test_register_datasets_from_file(tmp_path, dataset_name):
    write_fruit(tmp_path)
    write_image(tmp_path / "a.jpg")
    coco_instance_json(tmp_path / "train.json")
    other = dataset_name + "_parts"
    (tmp_path / "datasets.yaml").write_text(
        f"""
- name: {dataset_name}
  type: semantic_folder
  image_dir: images
  mask_dir: masks
  class_names: [apple, pear]
- name: {other}
  type: coco_instances
  json_file: train.json
  image_root: .
"""
    )
    try:
        names = register_datasets_from_file(str(tmp_path / "datasets.yaml"))
        assert names == [dataset_name, other]
        assert MetadataCatalog.get(dataset_name).stuff_classes == ["apple", "pear"]
        assert MetadataCatalog.get(other).thing_classes == ["part3", "part9"]
        (record,) = DatasetCatalog.get(dataset_name)
        assert record["file_name"] == str(tmp_path / "images" / "a.jpg")
        assert len(DatasetCatalog.get(other)) == 1
    finally:
        if other in DatasetCatalog.list():
            DatasetCatalog.remove(other)
            MetadataCatalog.remove(other)


@pytest.mark.parametrize(
    "content, message",
    [
        ("[]", "non-empty list"),
        ('[{"type": "semantic_folder"}]', "entry 0: each entry needs a 'name'"),
        ('[{"name": "x", "type": "voc"}]', "unknown type 'voc'"),
        ('[{"name": "x", "type": "coco_instances", "json": "a"}]', "entry 0 \\(x\\)"),
        ("[{", "cannot be parsed"),
    ],
)
def test_datasets_file_errors(tmp_path, content, message):
    path = tmp_path / "datasets.json"
    path.write_text(content)
    with pytest.raises(ValueError, match=message):
        register_datasets_from_file(str(path))
    with pytest.raises(FileNotFoundError, match="nope.json"):
        register_datasets_from_file(str(tmp_path / "nope.json"))


def test_datasets_file_from_environment(tmp_path, monkeypatch):
    """MASK2FORMER_DATASETS is read when mask2former.data.datasets is imported; reloading
    the package runs that import-time code again in this process."""
    import mask2former.data.datasets as datasets_package

    write_fruit(tmp_path)
    name = f"fruit_{uuid.uuid4().hex[:8]}"
    spec = [
        {
            "name": name,
            "type": "semantic_folder",
            "image_dir": "images",
            "mask_dir": "masks",
            "class_names": ["apple", "pear"],
        }
    ]
    (tmp_path / "datasets.json").write_text(json.dumps(spec))
    monkeypatch.setenv("MASK2FORMER_DATASETS", str(tmp_path / "datasets.json"))
    try:
        importlib.reload(datasets_package)
        assert len(DatasetCatalog.get(name)) == 1
        assert MetadataCatalog.get(name).evaluator_type == "sem_seg"
    finally:
        if name in DatasetCatalog.list():
            DatasetCatalog.remove(name)
            MetadataCatalog.remove(name)


def test_runnable_example_trains_on_a_registered_folder(tmp_path):
    """scripts/custom_dataset_example.py writes a folder dataset, registers it with
    `register_semantic_folder` and trains and evaluates on it (2 iterations here)."""
    repo = Path(__file__).resolve().parents[1]
    cmd = [sys.executable, str(repo / "scripts" / "custom_dataset_example.py"), "--iters", "2", "--output", str(tmp_path)]
    proc = subprocess.run(cmd, cwd=repo, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    images = sorted(p.stem for p in (tmp_path / "data" / "train" / "images").glob("*.jpg"))
    masks = sorted(p.stem for p in (tmp_path / "data" / "train" / "masks").glob("*.png"))
    assert len(images) == 16 and images == masks
    assert "sem_seg" in proc.stdout and "mIoU=" in proc.stdout
    assert (tmp_path / "train" / "model_final.pth").is_file()
