"""The built-in synthetic video dataset: determinism, the YouTube-VIS json against the
rendered clips, motion (moving, entering/leaving, occluded shapes) and lazy registration."""
import json
from pathlib import Path

import numpy as np
import pycocotools.mask as mask_util
import pytest
from PIL import Image

from detectron2.data import DatasetCatalog, MetadataCatalog

from mask2former.video.data import synthetic_videos as sv
from test_synthetic_shapes import _tree_digest

SMALL = dict(num_videos=3, num_frames=5, image_size=(64, 80), seed=4)


@pytest.fixture(scope="module")
def small_split(tmp_path_factory):
    folder = tmp_path_factory.mktemp("videos") / "split"
    folder.mkdir()
    sv.generate_synthetic_videos(folder, **SMALL)
    return folder


def test_generation_is_deterministic(small_split, tmp_path):
    sv.generate_synthetic_videos(tmp_path, **SMALL)
    first = _tree_digest(small_split)
    assert len(first) == SMALL["num_videos"] * SMALL["num_frames"] + 1
    assert first == _tree_digest(tmp_path)
    other = tmp_path / "other"
    sv.generate_synthetic_videos(other, **dict(SMALL, seed=SMALL["seed"] + 1))
    assert _tree_digest(other)["JPEGImages/00001/00000.jpg"] != first["JPEGImages/00001/00000.jpg"]


def test_json_is_youtube_vis_and_matches_the_clips(small_split):
    data = json.loads((small_split / "instances.json").read_text())
    height, width = SMALL["image_size"]
    assert [c["id"] for c in data["categories"]] == [1, 2, 3, 4]
    assert len(data["videos"]) == SMALL["num_videos"]
    videos = {v["id"]: v for v in data["videos"]}
    for video in data["videos"]:
        assert (video["height"], video["width"], video["length"]) == (height, width, SMALL["num_frames"])
        assert len(video["file_names"]) == video["length"]
        for name in video["file_names"]:
            frame = np.array(Image.open(small_split / "JPEGImages" / name))
            assert frame.shape == (height, width, 3)
    covered = {}  # (video, frame) -> union of the instance masks
    for ann in data["annotations"]:
        video = videos[ann["video_id"]]
        assert ann["iscrowd"] == 0 and ann["category_id"] in (1, 2, 3, 4)
        for key in ("segmentations", "areas", "bboxes"):
            assert len(ann[key]) == video["length"], key
        assert any(a is not None for a in ann["areas"]), "an instance appears at least once"
        for t, (segm, area, bbox) in enumerate(zip(ann["segmentations"], ann["areas"], ann["bboxes"])):
            if segm is None:
                assert area is None and bbox is None
                continue
            mask = mask_util.decode(segm).astype(bool)
            assert mask.shape == (height, width) and mask.sum() == area > 0
            ys, xs = np.nonzero(mask)
            assert bbox == [xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1]
            seen = covered.setdefault((video["id"], t), np.zeros_like(mask))
            assert not (seen & mask).any(), "visible masks of one frame never overlap"
            seen |= mask


def test_clips_have_moving_entering_and_occluded_shapes():
    classes, moved, absent_some_frames, occluded = set(), 0, 0, 0
    for i in range(12):
        frames, segment_maps, categories = sv.render_clip(np.random.default_rng([7, i]), 10, 64, 80)
        assert frames.shape == (10, 64, 80, 3) and frames.dtype == np.uint8
        assert segment_maps.shape == (10, 64, 80) and 1 <= len(categories) <= 4
        assert segment_maps.max() <= len(categories)
        classes.update(c["name"] for c in categories)
        for k in range(len(categories)):
            masks = segment_maps == k + 1
            areas = masks.sum(axis=(1, 2))
            present = np.nonzero(areas)[0]
            if len(present) < len(areas) and len(present):
                absent_some_frames += 1
            if len(present) >= 2:
                first, last = (np.argwhere(masks[t]).mean(0) for t in (present[0], present[-1]))
                moved += np.abs(first - last).max() > 2
            # a shape drawn later covers part of this one in some frame
            occluded += any(
                ((segment_maps[t] > k + 1) & _dilate(masks[t])).any() for t in present
            )
    assert classes == {c["name"] for c in sv.SYNTHETIC_VIDEO_CATEGORIES}
    assert moved >= 10 and absent_some_frames >= 3 and occluded >= 3, (moved, absent_some_frames, occluded)


def _dilate(mask):
    grown = mask.copy()
    grown[1:] |= mask[:-1]
    grown[:-1] |= mask[1:]
    grown[:, 1:] |= mask[:, :-1]
    grown[:, :-1] |= mask[:, 1:]
    return grown


def test_registration_is_lazy_and_loads_video_records(tmp_path):
    name = "test_synthetic_videos_lazy"
    split_dir = tmp_path / "split"
    sv.register_synthetic_video_split(name, split_dir, 2, 4, (48, 64), seed=1)
    try:
        meta = MetadataCatalog.get(name)
        assert meta.evaluator_type == "ytvis"
        assert meta.thing_classes == ["circle", "rectangle", "triangle", "star"]
        assert not split_dir.exists(), "registration touches no disk"
        assert sv.ensure_dataset_files(name) and Path(meta.json_file).is_file()
        records = DatasetCatalog.get(name)
        assert len(records) == 2
        for record in records:
            assert len(record["file_names"]) == len(record["annotations"]) == 4
            assert all(Path(f).is_file() for f in record["file_names"])
            for frame in record["annotations"]:
                assert all(0 <= obj["category_id"] < 4 for obj in frame)
    finally:
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
    assert not sv.ensure_dataset_files("synthetic_shapes_val_panoptic")


def test_builtin_names_are_registered():
    for split in sv.VIDEO_SPLITS:
        meta = MetadataCatalog.get(f"synthetic_videos_{split}")
        assert meta.evaluator_type == "ytvis"
        assert f"synthetic_videos/v{sv.SYNTHETIC_VIDEOS_VERSION}/{split}" in meta.json_file
