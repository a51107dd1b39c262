"""YouTube-VIS loading, registration and the video dataset mapper, on a tiny json with
frames written to a temporary folder."""

import json
import os

import numpy as np
import pycocotools.mask as mask_util
import pytest
import torch
from PIL import Image

from detectron2.config import CfgNode
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data import transforms as T

from mask2former.data.datasets import DatasetNotFoundError, register_datasets_from_file
from mask2former.video.data import (
    ClipAugmentation,
    YTVISDatasetMapper,
    build_clip_augmentation,
    filter_videos_without_objects,
    load_ytvis_json,
    register_ytvis_dataset,
    sample_frame_indices,
)

HEIGHT, WIDTH, LENGTH = 24, 32, 6


def _square(x0, y0, size):
    mask = np.zeros((HEIGHT, WIDTH), dtype=np.uint8)
    mask[y0 : y0 + size, x0 : x0 + size] = 1
    return mask


def _uncompressed_rle(mask):
    """Column-major run lengths starting with zeros, as in the YouTube-VIS jsons."""
    flat = mask.flatten(order="F")
    counts, value, run = [], 0, 0
    for v in flat:
        if v != value:
            counts.append(run)
            value, run = v, 0
        run += 1
    counts.append(run)
    return {"size": [HEIGHT, WIDTH], "counts": counts}


def _compressed_rle(mask):
    rle = mask_util.encode(np.asfortranarray(mask))
    return {"size": rle["size"], "counts": rle["counts"].decode("ascii")}


def _polygon(x0, y0, size):
    x1, y1 = x0 + size, y0 + size
    return [[x0, y0, x1, y0, x1, y1, x0, y1]]


def write_tiny_ytvis(folder):
    """One video of LENGTH frames where frame t's pixel (0, 0) is t * 10, with
    track 1 (class id 3): a polygon square moving right in frames 0..3, absent in 4..5;
    track 2 (class id 7): uncompressed RLE in even frames, compressed RLE in odd ones,
    absent (null) in frame 2. Returns (json path, image root)."""
    image_root = os.path.join(folder, "JPEGImages")
    os.makedirs(os.path.join(image_root, "vid"), exist_ok=True)
    file_names = []
    for t in range(LENGTH):
        frame = np.full((HEIGHT, WIDTH, 3), 128, dtype=np.uint8)
        frame[:4, :4] = t * 10
        name = f"vid/{t:05d}.png"  # lossless, so tests can read frame ids back
        Image.fromarray(frame).save(os.path.join(image_root, name))
        file_names.append(name)
    track1 = [_polygon(2 + t, 4, 6) if t < 4 else None for t in range(LENGTH)]
    track2 = []
    for t in range(LENGTH):
        mask = _square(20, 10 + t, 5)
        encode = _uncompressed_rle if t % 2 == 0 else _compressed_rle
        track2.append(None if t == 2 else encode(mask))
    data = {
        "videos": [
            {"id": 5, "file_names": file_names, "height": HEIGHT, "width": WIDTH, "length": LENGTH}
        ],
        "categories": [{"id": 3, "name": "cat"}, {"id": 7, "name": "dog"}],
        "annotations": [
            {
                "id": 1,
                "video_id": 5,
                "category_id": 3,
                "iscrowd": 0,
                "segmentations": track1,
                "bboxes": [[2 + t, 4, 6, 6] if s else None for t, s in enumerate(track1)],
                "areas": [36 if s else None for s in track1],
            },
            {
                "id": 2,
                "video_id": 5,
                "category_id": 7,
                "iscrowd": 0,
                "segmentations": track2,
                "bboxes": [[20, 10 + t, 5, 5] if s else None for t, s in enumerate(track2)],
                "areas": [25 if s else None for s in track2],
            },
        ],
    }
    json_file = os.path.join(folder, "train.json")
    with open(json_file, "w") as f:
        json.dump(data, f)
    return json_file, image_root


@pytest.fixture
def tiny_ytvis(tmp_path):
    return write_tiny_ytvis(str(tmp_path))


def test_load_ytvis_json_frames_and_formats(tiny_ytvis):
    json_file, image_root = tiny_ytvis
    (record,) = load_ytvis_json(json_file, image_root, {3: 0, 7: 1})
    assert record["video_id"] == 5 and record["length"] == LENGTH
    assert record["file_names"][2] == os.path.join(image_root, "vid/00002.png")
    ids_per_frame = [[a["id"] for a in frame] for frame in record["annotations"]]
    assert ids_per_frame == [[1, 2], [1, 2], [1], [1, 2], [2], [2]]
    classes = {a["id"]: a["category_id"] for frame in record["annotations"] for a in frame}
    assert classes == {1: 0, 2: 1}
    # Uncompressed and compressed RLE decode to the same square.
    for t in (0, 1):
        (anno,) = [a for a in record["annotations"][t] if a["id"] == 2]
        decoded = mask_util.decode(anno["segmentation"])
        np.testing.assert_array_equal(decoded, _square(20, 10 + t, 5))


def test_filter_videos_without_objects(tiny_ytvis):
    (record,) = load_ytvis_json(*tiny_ytvis, {3: 0, 7: 1})
    empty = dict(record, annotations=[[] for _ in range(LENGTH)])
    crowd = [[dict(a, iscrowd=1) for a in frame] for frame in record["annotations"]]
    crowd_only = dict(record, annotations=crowd)
    assert filter_videos_without_objects([record, empty, crowd_only]) == [record]


def test_load_ytvis_json_errors_name_the_file(tiny_ytvis, tmp_path):
    json_file, image_root = tiny_ytvis
    with pytest.raises(ValueError, match="category_id 7"):
        load_ytvis_json(json_file, image_root, {3: 0})
    data = json.load(open(json_file))
    data["annotations"][0]["segmentations"].pop()
    bad = str(tmp_path / "bad.json")
    json.dump(data, open(bad, "w"))
    with pytest.raises(ValueError, match="bad.json.*5 segmentations"):
        load_ytvis_json(bad, image_root, {3: 0, 7: 1})


def test_register_ytvis_dataset_and_datasets_file(tiny_ytvis, tmp_path):
    json_file, image_root = tiny_ytvis
    register_ytvis_dataset("tiny_ytvis_test", json_file, image_root)
    try:
        meta = MetadataCatalog.get("tiny_ytvis_test")
        assert meta.thing_classes == ["cat", "dog"] and meta.evaluator_type == "ytvis"
        assert meta.thing_dataset_id_to_contiguous_id == {3: 0, 7: 1}
        assert len(DatasetCatalog.get("tiny_ytvis_test")) == 1
        with pytest.raises(FileNotFoundError, match="image_root 'nowhere'"):
            register_ytvis_dataset("tiny_ytvis_other", json_file, "nowhere")
    finally:
        DatasetCatalog.remove("tiny_ytvis_test")
        MetadataCatalog.remove("tiny_ytvis_test")

    listing = tmp_path / "datasets.yaml"
    listing.write_text(
        "- {name: tiny_ytvis_file, type: ytvis, json_file: train.json, image_root: JPEGImages}\n"
    )
    try:
        assert register_datasets_from_file(str(listing)) == ["tiny_ytvis_file"]
        assert DatasetCatalog.get("tiny_ytvis_file")[0]["video_id"] == 5
    finally:
        DatasetCatalog.remove("tiny_ytvis_file")
        MetadataCatalog.remove("tiny_ytvis_file")


def test_published_names_and_missing_path_error(tmp_path, monkeypatch):
    for year in ("2019", "2021"):
        for split in ("train", "val"):
            meta = MetadataCatalog.get(f"ytvis_{year}_{split}")
            assert len(meta.thing_classes) == 40 and meta.evaluator_type == "ytvis"
    assert MetadataCatalog.get("ytvis_2019_train").thing_classes[:2] == ["person", "giant_panda"]
    assert MetadataCatalog.get("ytvis_2021_val").thing_classes[-1] == "zebra"
    assert MetadataCatalog.get("ytvis_2021_val").json_file.endswith(
        os.path.join("ytvis_2021", "valid.json")
    )
    with pytest.raises(DatasetNotFoundError, match="ytvis_2019_train.*JPEGImages"):
        DatasetCatalog.get("ytvis_2019_train")


# ---------------------------------------------------------------------------------------
# Frame sampling and the mapper


def test_sample_frame_indices_range_and_order():
    rng = np.random.RandomState(0)
    seen_unsorted = False
    for _ in range(200):
        idx = sample_frame_indices(30, 4, 3, shuffle=False, rng=rng)
        assert idx == sorted(idx) and len(set(idx)) == 4
        # Some frame (the reference) has every other one within the range.
        assert any(all(abs(t - r) <= 3 for t in idx) for r in idx)
        assert all(0 <= t < 30 for t in idx)
        shuffled = sample_frame_indices(30, 4, 3, shuffle=True, rng=rng)
        assert any(all(abs(t - r) <= 3 for t in shuffled) for r in shuffled)
        seen_unsorted |= shuffled != sorted(shuffled)
    assert seen_unsorted
    # Short videos repeat frames; a one-frame video repeats its frame.
    assert sorted(set(sample_frame_indices(2, 5, 3, False, rng))) == [0, 1]
    assert sample_frame_indices(1, 3, 3, False, rng) == [0, 0, 0]


def _frame_marker(image):
    """The frame id written into the top-left corner by write_tiny_ytvis."""
    return int(image[0, 0, 0]) // 10


def test_mapper_instances_absent_frames_and_ids(tiny_ytvis):
    json_file, image_root = tiny_ytvis
    (record,) = load_ytvis_json(json_file, image_root, {3: 0, 7: 1})
    mapper = YTVISDatasetMapper(
        True,
        augmentation=ClipAugmentation([], []),
        image_format="RGB",
        sampling_frame_num=LENGTH,
        sampling_frame_range=LENGTH,
        num_classes=2,
    )
    out = mapper(record)
    assert out["frame_idx"] == list(range(LENGTH))
    assert [_frame_marker(i) for i in out["image"]] == list(range(LENGTH))
    assert all(i.dtype == torch.uint8 and i.shape == (3, HEIGHT, WIDTH) for i in out["image"])
    assert (out["height"], out["width"]) == (HEIGHT, WIDTH)
    ids = torch.stack([i.gt_ids for i in out["instances"]], dim=1)
    assert ids.tolist() == [[1, 1, 1, 1, -1, -1], [2, 2, -1, 2, 2, 2]]
    for t, instances in enumerate(out["instances"]):
        assert instances.gt_classes.tolist() == [0, 1]
        masks = instances.gt_masks.tensor
        expected1 = _square(2 + t, 4, 6) if t < 4 else np.zeros((HEIGHT, WIDTH))
        np.testing.assert_array_equal(masks[0].numpy(), expected1)
        expected2 = np.zeros((HEIGHT, WIDTH)) if t == 2 else _square(20, 10 + t, 5)
        np.testing.assert_array_equal(masks[1].numpy(), expected2)

    # Clips of two neighbouring frames: objects absent from both are dropped.
    mapper = YTVISDatasetMapper(
        True,
        augmentation=ClipAugmentation([], []),
        image_format="RGB",
        sampling_frame_num=2,
        sampling_frame_range=1,
    )
    mapper.rng = np.random.RandomState(0)
    visible = {t: {1, 2} for t in range(LENGTH)}
    visible[2], visible[4], visible[5] = {1}, {2}, {2}
    seen = set()
    for _ in range(30):
        out = mapper(record)
        idx = out["frame_idx"]
        seen.add(tuple(idx))
        expected = sorted(visible[idx[0]] | visible[idx[1]])
        ids = [sorted({int(i) for inst in out["instances"] for i in inst.gt_ids if i >= 0})]
        assert ids == [expected]
        assert all(len(inst) == len(expected) for inst in out["instances"])
    assert (4, 5) in seen  # the clip that drops track 1


def _by_clip_cfg(sampling, flip):
    cfg = CfgNode(
        {
            "INPUT": {
                "CROP": {"ENABLED": True, "TYPE": "absolute_range", "SIZE": [12, 20]},
                "MIN_SIZE_TRAIN": [16, 24, 32, 40],
                "MAX_SIZE_TRAIN": 1000,
                "MIN_SIZE_TRAIN_SAMPLING": sampling,
                "RANDOM_FLIP": flip,
                "AUGMENTATIONS": [],
            }
        }
    )
    return cfg


def test_clip_augmentation_identical_across_frames():
    rng = np.random.RandomState(0)
    frame = rng.randint(0, 255, (HEIGHT, WIDTH, 3)).astype(np.uint8)
    augmentation = build_clip_augmentation(_by_clip_cfg("choice_by_clip", "flip_by_clip"), True)
    sizes, flips = set(), set()
    for _ in range(40):
        frames, transforms = augmentation([frame.copy() for _ in range(5)])
        for other in frames[1:]:
            np.testing.assert_array_equal(other, frames[0])
        assert len({str(t.transforms) for t in transforms}) == 1
        sizes.add(frames[0].shape[:2])
        flips.add(any(isinstance(t, T.HFlipTransform) for t in transforms[0].transforms))
    assert len(sizes) > 1 and flips == {True, False}  # it does draw, once per clip

    # Without "_by_clip" the resize and flip are drawn per frame.
    per_frame = build_clip_augmentation(_by_clip_cfg("choice", "horizontal"), True)
    differs = False
    for _ in range(20):
        frames, _ = per_frame([frame.copy() for _ in range(5)])
        differs |= any(f.shape != frames[0].shape or (f != frames[0]).any() for f in frames)
    assert differs
    with pytest.raises(ValueError, match="INPUT.RANDOM_FLIP"):
        build_clip_augmentation(_by_clip_cfg("choice", "sideways"), True)


def test_mapper_masks_follow_the_clip_augmentation(tiny_ytvis):
    """Flipped and resized frames carry masks flipped and resized the same way."""
    json_file, image_root = tiny_ytvis
    (record,) = load_ytvis_json(json_file, image_root, {3: 0, 7: 1})
    cfg = _by_clip_cfg("choice_by_clip", "flip_by_clip")
    cfg.INPUT.CROP.ENABLED = False
    cfg.INPUT.MIN_SIZE_TRAIN = [48]
    mapper = YTVISDatasetMapper(
        True,
        augmentation=build_clip_augmentation(cfg, True),
        image_format="RGB",
        sampling_frame_num=3,
        sampling_frame_range=5,
    )
    mapper.rng = np.random.RandomState(1)
    flipped = set()
    for _ in range(8):
        out = mapper(record)
        for t, image, instances in zip(out["frame_idx"], out["image"], out["instances"]):
            assert image.shape == (3, 48, 64)
            marker_left = image[0, 0, 0] == 10 * t
            flipped.add(bool(not marker_left))
            rows = (instances.gt_ids == 2).nonzero().flatten().tolist()
            if not rows:  # track 2 is absent from frame 2
                continue
            k = rows[0]
            expected = np.kron(_square(20, 10 + t, 5), np.ones((2, 2)))
            if not marker_left:
                expected = expected[:, ::-1]
            np.testing.assert_array_equal(instances.gt_masks.tensor[k].numpy(), expected)
    assert flipped == {True, False}


def test_mapper_test_mode_returns_all_frames(tiny_ytvis):
    json_file, image_root = tiny_ytvis
    (record,) = load_ytvis_json(json_file, image_root, {3: 0, 7: 1})
    cfg = CfgNode({"INPUT": {"MIN_SIZE_TEST": 12, "MAX_SIZE_TEST": 1000}})
    mapper = YTVISDatasetMapper(
        False, augmentation=build_clip_augmentation(cfg, False), image_format="RGB"
    )
    out = mapper(record)
    assert out["frame_idx"] == list(range(LENGTH)) and "instances" not in out
    assert all(i.shape == (3, 12, 16) for i in out["image"])
    assert (out["height"], out["width"]) == (HEIGHT, WIDTH)


def test_mapper_from_published_config():
    from detectron2.config import get_cfg

    from mask2former import add_maskformer2_video_config

    cfg = get_cfg()
    add_maskformer2_video_config(cfg)
    cfg.merge_from_file("configs/youtubevis_2019/video_maskformer2_R50_bs16_8ep.yaml")
    mapper = YTVISDatasetMapper(cfg, is_train=True)
    assert mapper.sampling_frame_num == 2 and mapper.sampling_frame_range == 20
    assert mapper.num_classes == 40 and mapper.image_format == "RGB"
    resize, flip = mapper.augmentation.augmentations
    assert isinstance(resize, T.ResizeShortestEdge) and resize.short_edge_length == (360, 480)
    assert isinstance(flip, T.RandomFlip) and mapper.augmentation.per_clip == [True, True]
    test_resize = YTVISDatasetMapper(cfg, is_train=False).augmentation.augmentations[0]
    assert test_resize.short_edge_length == (360, 360)
