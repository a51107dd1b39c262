"""The built-in synthetic shapes dataset: determinism, agreement of its label formats,
class coverage, lazy registration and safe concurrent generation."""
import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pycocotools.mask as mask_util
import pytest
from PIL import Image

from detectron2.data import DatasetCatalog, MetadataCatalog

from mask2former.data.datasets import synthetic_shapes as ss

REPO = Path(__file__).resolve().parents[1]
SMALL = dict(num_images=12, image_size=(96, 128), seed=5)


def _tree_digest(folder):
    """{relative path: sha256} of every file under ``folder``."""
    folder = Path(folder)
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def _rgb2id(rgb):
    rgb = rgb.astype(np.uint32)
    return rgb[..., 0] + 256 * rgb[..., 1] + 256 * 256 * rgb[..., 2]


@pytest.fixture(scope="module")
def small_split(tmp_path_factory):
    folder = tmp_path_factory.mktemp("shapes") / "split"
    folder.mkdir()
    ss.generate_synthetic_shapes(folder, **SMALL)
    return folder


def test_generation_is_deterministic(small_split, tmp_path):
    ss.generate_synthetic_shapes(tmp_path, **SMALL)
    first, second = _tree_digest(small_split), _tree_digest(tmp_path)
    assert len(first) == 3 * SMALL["num_images"] + 2
    assert first == second
    # a different seed gives different images
    other = tmp_path / "other"
    other.mkdir()
    ss.generate_synthetic_shapes(other, SMALL["num_images"], SMALL["image_size"], seed=SMALL["seed"] + 1)
    assert _tree_digest(other)["images/000000.jpg"] != first["images/000000.jpg"]


# Digest of a few rendered samples (pixels, segment maps, classes) per generator version.
# The generator is written to give the same bytes on every machine; if this fails after a
# change to the generator, bump SYNTHETIC_SHAPES_VERSION (so caches regenerate) and add
# the new digest here. If it fails on a new platform, the rendering is not portable.
RENDER_DIGESTS = {5: "3ff597b9f5429a01d7813513d28a8a8f81af9f32290b84615902f621348beb7e"}


def test_rendering_matches_the_version_digest():
    digest = hashlib.sha256()
    for i in range(4):
        image, segment_map, segments, _ = ss.render_sample(np.random.default_rng([2024, i]), 72, 96)
        digest.update(image.tobytes())
        digest.update(segment_map.astype(np.int64).tobytes())
        digest.update(",".join(c["name"] for c in segments).encode())
    assert ss.SYNTHETIC_SHAPES_VERSION in RENDER_DIGESTS, "new generator version: record its digest"
    assert digest.hexdigest() == RENDER_DIGESTS[ss.SYNTHETIC_SHAPES_VERSION]


def test_label_formats_agree(small_split):
    panoptic = json.loads((small_split / "panoptic.json").read_text())
    instances = json.loads((small_split / "instances.json").read_text())
    categories = {c["id"]: c for c in panoptic["categories"]}
    contiguous = {c["id"]: i for i, c in enumerate(ss.SYNTHETIC_SHAPES_CATEGORIES)}
    height, width = SMALL["image_size"]
    assert len(panoptic["images"]) == len(panoptic["annotations"]) == SMALL["num_images"]
    assert {c["id"] for c in instances["categories"]} == {c for c in categories if categories[c]["isthing"]}

    anns_by_image = {}
    for ann in instances["annotations"]:
        assert ann["iscrowd"] == 0
        anns_by_image.setdefault(ann["image_id"], []).append(ann)

    for pan_ann in panoptic["annotations"]:
        stem = os.path.splitext(pan_ann["file_name"])[0]
        image = np.array(Image.open(small_split / "images" / f"{stem}.jpg"))
        assert image.shape == (height, width, 3) and image.dtype == np.uint8
        ids = _rgb2id(np.array(Image.open(small_split / "panoptic" / pan_ann["file_name"])))
        semantic = np.array(Image.open(small_split / "semantic" / f"{stem}.png"))
        assert semantic.shape == ids.shape == (height, width)

        segments = pan_ann["segments_info"]
        assert set(np.unique(ids).tolist()) == {s["id"] for s in segments}, "every pixel labelled, no empty segment"
        expected_semantic = np.full((height, width), 255, np.int64)
        for s in segments:
            mask = ids == s["id"]
            assert s["area"] == mask.sum()
            ys, xs = np.nonzero(mask)
            assert s["bbox"] == [xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1]
            expected_semantic[mask] = contiguous[s["category_id"]]
        np.testing.assert_array_equal(semantic, expected_semantic)

        # instance masks == thing segments (same order, class, pixels, box and area)
        things = [s for s in segments if categories[s["category_id"]]["isthing"]]
        stuff = [s for s in segments if not categories[s["category_id"]]["isthing"]]
        anns = anns_by_image.get(pan_ann["image_id"], [])
        assert 1 <= len(stuff) <= 3 and len({s["category_id"] for s in stuff}) == len(stuff)
        assert len(things) <= 5 and len(anns) == len(things)
        for ann, seg in zip(anns, things):
            mask = mask_util.decode(ann["segmentation"]).astype(bool)
            np.testing.assert_array_equal(mask, ids == seg["id"])
            assert (ann["category_id"], ann["area"], ann["bbox"]) == (seg["category_id"], seg["area"], seg["bbox"])


def test_all_classes_appear_and_occlusion_is_partial():
    """Every class appears; some things are partly hidden by later ones, none by more
    than half of the drawn shape."""
    seen, occluded = set(), 0
    for i in range(30):
        rng = np.random.default_rng([11, i])
        image, segment_map, segments, drawn_areas = ss.render_sample(rng, 128, 128)
        assert image.shape == (128, 128, 3) and image.dtype == np.uint8
        assert segment_map.min() >= 0 and segment_map.max() < len(segments)
        seen.update(c["name"] for c in segments)
        assert set(drawn_areas) == {k for k, c in enumerate(segments) if c["isthing"]}
        for k, drawn in drawn_areas.items():
            visible = int((segment_map == k).sum())
            assert 0.5 * drawn <= visible <= drawn
            occluded += visible < drawn
    assert seen == {c["name"] for c in ss.SYNTHETIC_SHAPES_CATEGORIES}
    assert occluded > 0


def test_loaders_use_contiguous_ids(tmp_path):
    prefix = "test_shapes_loaders"
    ss.register_synthetic_split(prefix, tmp_path / "split", 4, (64, 64), seed=2)
    try:
        panoptic = DatasetCatalog.get(f"{prefix}_panoptic")
        instances = DatasetCatalog.get(f"{prefix}_instance")
        semantic = DatasetCatalog.get(f"{prefix}_sem_seg")
        meta = MetadataCatalog.get(f"{prefix}_panoptic")
        assert len(panoptic) == len(instances) == len(semantic) == 4
        num_things = len(meta.thing_classes)
        for pan, inst, sem in zip(panoptic, instances, semantic):
            assert pan["file_name"] == inst["file_name"] == sem["file_name"]
            assert Path(pan["pan_seg_file_name"]).is_file() and Path(sem["sem_seg_file_name"]).is_file()
            labels = np.array(Image.open(pan["sem_seg_file_name"]))
            for s in pan["segments_info"]:
                assert s["isthing"] == (s["category_id"] < num_things)
                assert s["category_id"] in np.unique(labels)
            thing_classes = [s["category_id"] for s in pan["segments_info"] if s["isthing"]]
            assert [a["category_id"] for a in inst["annotations"]] == thing_classes
    finally:
        for view in ("panoptic", "instance", "sem_seg"):
            DatasetCatalog.remove(f"{prefix}_{view}")
            MetadataCatalog.remove(f"{prefix}_{view}")


def test_default_registration_metadata():
    meta = MetadataCatalog.get("synthetic_shapes_val_panoptic")
    assert meta.evaluator_type == "coco_panoptic_seg"
    assert meta.thing_classes == ["circle", "rectangle", "triangle", "star"]
    assert meta.stuff_classes[: len(meta.thing_classes)] == meta.thing_classes
    assert len(meta.stuff_classes) == 7 and meta.ignore_label == 255
    assert sorted(meta.thing_dataset_id_to_contiguous_id.values()) == [0, 1, 2, 3]
    assert sorted(meta.stuff_dataset_id_to_contiguous_id.values()) == list(range(7))
    for field in ("panoptic_root", "panoptic_json", "json_file", "sem_seg_root", "image_root"):
        assert f"v{ss.SYNTHETIC_SHAPES_VERSION}" in getattr(meta, field)
    for split in ("train", "val", "mini_train", "mini_val"):
        assert MetadataCatalog.get(f"synthetic_shapes_{split}_instance").evaluator_type == "coco"
        assert MetadataCatalog.get(f"synthetic_shapes_{split}_sem_seg").evaluator_type == "sem_seg"
        assert MetadataCatalog.get(f"synthetic_shapes_{split}_panoptic").json_file.endswith(
            f"{split}/instances.json")


def test_failed_generation_leaves_nothing(tmp_path, monkeypatch):
    def broken(output_dir, *args, **kwargs):
        (Path(output_dir) / "images").mkdir()
        raise RuntimeError("disk full")

    monkeypatch.setattr(ss, "generate_synthetic_shapes", broken)
    target = tmp_path / "split"
    with pytest.raises(RuntimeError, match="disk full"):
        ss.ensure_split_dir(target, 3, (64, 64), 0)
    assert not target.exists()
    assert [p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock")] == []


def test_leftovers_of_a_crashed_generation_are_removed(tmp_path):
    stale = tmp_path / ".split.tmp-crashed"
    (stale / "images").mkdir(parents=True)
    target = ss.ensure_split_dir(tmp_path / "split", 2, (48, 48), 0)
    assert (target / "panoptic.json").is_file()
    assert not stale.exists()


_RACE_CHILD = """
import os, sys, time
from pathlib import Path
target, ready, go = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
cache = Path(os.environ["MASK2FORMER_CACHE"])
import mask2former  # registers every dataset
from detectron2.data import MetadataCatalog
from mask2former.data.datasets.synthetic_shapes import ensure_split_dir
paths_in_cache = MetadataCatalog.get("synthetic_shapes_train_panoptic").panoptic_json.startswith(str(cache))
print("registration", paths_in_cache, cache.exists())
ready.touch()
while not go.exists():
    time.sleep(0.01)
print(ensure_split_dir(target, 16, (64, 96), 7))
"""


def test_registration_is_lazy_and_concurrent_generation_is_safe(tmp_path):
    """Two processes import the package (which must not touch the cache) and then
    generate the same split at the same moment: both get the complete split, identical
    to a generation in this process, and no temporary folder is left behind."""
    target = tmp_path / "race" / "split"
    go = tmp_path / "go"
    env = dict(os.environ, MASK2FORMER_CACHE=str(tmp_path / "cache"))
    procs, ready = [], []
    for i in range(2):
        ready.append(tmp_path / f"ready{i}")
        procs.append(
            subprocess.Popen(
                [sys.executable, "-c", _RACE_CHILD, str(target), str(ready[-1]), str(go)],
                cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            )
        )
    deadline = time.time() + 300
    while not all(r.exists() for r in ready) and time.time() < deadline:
        if any(p.poll() is not None for p in procs):
            break
        time.sleep(0.05)
    go.touch()
    outputs = [p.communicate(timeout=300) for p in procs]
    for p, (out, err) in zip(procs, outputs):
        assert p.returncode == 0, err[-3000:]
        assert out.strip().splitlines()[-2:] == ["registration True False", str(target)]
    assert not (tmp_path / "cache").exists()
    reference = tmp_path / "reference"
    reference.mkdir()
    ss.generate_synthetic_shapes(reference, 16, (64, 96), 7)
    assert _tree_digest(target) == _tree_digest(reference)
    leftovers = [p.name for p in target.parent.iterdir() if p.name != "split" and not p.name.endswith(".lock")]
    assert leftovers == []
