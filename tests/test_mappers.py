"""Dataset mappers on small generated images and labels in the real file formats."""

import logging
from pathlib import Path

import numpy as np
import pycocotools.mask as mask_util
import pytest
import torch
from PIL import Image

from detectron2.data import DatasetMapper
from detectron2.data import transforms as T
from detectron2.structures import BitMasks
from panopticapi.utils import id2rgb

from mask2former.config import build_config
from mask2former.data import build_dataset_mapper
from mask2former.data.dataset_mappers import (
    COCOInstanceLSJDatasetMapper,
    COCOPanopticLSJDatasetMapper,
    MaskFormerInstanceDatasetMapper,
    MaskFormerPanopticDatasetMapper,
    MaskFormerSemanticDatasetMapper,
)
from mask2former.data.dataset_mappers.augmentations import ColorAugSSD, PhotometricDistortTransform

RED, BLUE = (255, 0, 0), (0, 0, 255)


def make_cfg(mapper_name, **input_overrides):
    cfg = build_config()
    cfg.DATASETS.TRAIN = ()
    cfg.INPUT.DATASET_MAPPER_NAME = mapper_name
    cfg.INPUT.FORMAT = "RGB"
    cfg.INPUT.MIN_SIZE_TRAIN = (40,)
    cfg.INPUT.MAX_SIZE_TRAIN = 1000
    for key, value in input_overrides.items():
        node, *rest = key.split(".")
        target = cfg.INPUT
        if rest:
            target = target[node]
            key = rest[0]
        target[key] = value
    return cfg


@pytest.fixture
def two_halves(tmp_path):
    """A 40x60 (HxW) image: left half red (class 1 / segment 11), right half blue
    (class 2 / segment 22); the top 4 rows are unlabelled (255 / no segment)."""
    h, w = 40, 60
    image = np.zeros((h, w, 3), np.uint8)
    image[:, : w // 2] = RED
    image[:, w // 2 :] = BLUE
    Image.fromarray(image).save(tmp_path / "img.png")
    sem = np.full((h, w), 1, np.uint8)
    sem[:, w // 2 :] = 2
    sem[:4] = 255
    Image.fromarray(sem).save(tmp_path / "sem.png")
    ids = np.where(sem == 1, 11, 22)
    ids[:4] = 0
    Image.fromarray(id2rgb(ids)).save(tmp_path / "pan.png")
    left = [[0, 4, w / 2, 4, w / 2, h, 0, h]]
    right = np.zeros((h, w), np.uint8, order="F")
    right[4:, w // 2 :] = 1
    rle = mask_util.encode(np.asfortranarray(right))
    rle["counts"] = rle["counts"].decode()
    return {
        "file_name": str(tmp_path / "img.png"),
        "height": h,
        "width": w,
        "image_id": 7,
        "sem_seg_file_name": str(tmp_path / "sem.png"),
        "pan_seg_file_name": str(tmp_path / "pan.png"),
        "segments_info": [
            {"id": 11, "category_id": 1, "iscrowd": 0},
            {"id": 22, "category_id": 2, "iscrowd": 0},
        ],
        "annotations": [
            {"category_id": 1, "segmentation": left, "iscrowd": 0},
            {"category_id": 2, "segmentation": rle, "iscrowd": 0},
        ],
    }


def semantic_record(rec):
    return {k: rec[k] for k in ("file_name", "height", "width", "image_id", "sem_seg_file_name")}


def panoptic_record(rec, with_sem_seg=True):
    keys = ["file_name", "height", "width", "image_id", "pan_seg_file_name", "segments_info"]
    if with_sem_seg:
        keys.append("sem_seg_file_name")
    return {k: rec[k] for k in keys}


def instance_record(rec):
    return {k: rec[k] for k in ("file_name", "height", "width", "image_id", "annotations")}


def colour_of(image, mask):
    """Mean RGB of `image` (3, H, W) over `mask` (H, W)."""
    return tuple(image[:, mask].float().mean(dim=1).round().int().tolist())


# ---------------------------------------------------------------- semantic


def test_semantic_shapes_dtypes_padding_and_ignore(two_halves):
    cfg = make_cfg("mask_former_semantic", SIZE_DIVISIBILITY=64)
    mapper = build_dataset_mapper(cfg, is_train=True)
    assert isinstance(mapper, MaskFormerSemanticDatasetMapper)
    out = mapper(semantic_record(two_halves))

    assert out["image"].dtype == torch.uint8 and out["image"].shape == (3, 64, 64)
    assert out["sem_seg"].dtype == torch.int64 and out["sem_seg"].shape == (64, 64)
    # padding: right and bottom, image 128 and sem_seg the ignore label
    assert (out["image"][:, 40:, :] == 128).all() and (out["image"][:, :, 60:] == 128).all()
    assert (out["sem_seg"][40:, :] == 255).all() and (out["sem_seg"][:, 60:] == 255).all()
    instances = out["instances"]
    assert instances.image_size == (64, 64)
    assert instances.gt_classes.dtype == torch.int64
    assert sorted(instances.gt_classes.tolist()) == [1, 2]  # 255 excluded
    assert isinstance(instances.gt_masks, BitMasks)
    for cls, mask in zip(instances.gt_classes, instances.gt_masks.tensor):
        assert torch.equal(mask, out["sem_seg"] == cls)
    assert out["height"] == 40 and out["width"] == 60 and out["image_id"] == 7


def test_semantic_flip_keeps_image_and_labels_aligned(two_halves):
    mapper = MaskFormerSemanticDatasetMapper(
        augmentations=[T.RandomFlip(prob=1.0)],
        image_format="RGB",
        ignore_label=255,
        size_divisibility=-1,
    )
    out = mapper(semantic_record(two_halves))
    sem = out["sem_seg"]
    # after the flip, class 1 (red) is on the right
    assert (sem[10:, -1] == 1).all() and (sem[10:, 0] == 2).all()
    assert colour_of(out["image"], sem == 1) == RED
    assert colour_of(out["image"], sem == 2) == BLUE


def _max_single_class_share(sem_seg, ignore_label=255):
    labels, counts = np.unique(sem_seg[sem_seg != ignore_label], return_counts=True)
    return counts.max() / counts.sum(), len(labels)


def test_semantic_crop_retries_until_no_category_dominates(tmp_path):
    # 40x40 labels: class 2 in a 20x20 corner, class 1 elsewhere, an ignored stripe.
    sem = np.ones((40, 40), np.uint8)
    sem[:20, :20] = 2
    sem[:, 38:] = 255
    Image.fromarray(sem).save(tmp_path / "sem.png")
    Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(tmp_path / "img.png")
    record = {
        "file_name": str(tmp_path / "img.png"),
        "sem_seg_file_name": str(tmp_path / "sem.png"),
    }

    def fraction_balanced(max_area, trials=20):
        cfg = make_cfg(
            "mask_former_semantic",
            **{"CROP.ENABLED": True, "CROP.TYPE": "absolute", "CROP.SIZE": [20, 20]}
        )
        cfg.INPUT.CROP.SINGLE_CATEGORY_MAX_AREA = max_area
        cfg.INPUT.RANDOM_FLIP = "none"
        mapper = build_dataset_mapper(cfg, True)
        np.random.seed(0)
        balanced = 0
        for _ in range(trials):
            out = mapper(record)
            assert out["sem_seg"].shape == (20, 20)
            share, n = _max_single_class_share(out["sem_seg"].numpy())
            balanced += int(n > 1 and share < 0.75)
        return balanced / trials

    constrained = fraction_balanced(0.75)
    unconstrained = fraction_balanced(1.0)
    # One random crop is balanced ~40% of the time; ten retries make it ~99%.
    assert constrained >= 0.9
    assert unconstrained <= 0.7
    assert constrained > unconstrained


def test_semantic_rejects_annotations_and_missing_label(two_halves):
    mapper = MaskFormerSemanticDatasetMapper(
        augmentations=[], image_format="RGB", ignore_label=255, size_divisibility=-1
    )
    with pytest.raises(ValueError, match="annotations"):
        mapper({**semantic_record(two_halves), "annotations": []})
    record = semantic_record(two_halves)
    del record["sem_seg_file_name"]
    with pytest.raises(ValueError, match="sem_seg_file_name"):
        mapper(record)


def test_semantic_all_ignored_gives_empty_instances(tmp_path):
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "img.png")
    Image.fromarray(np.full((8, 8), 255, np.uint8)).save(tmp_path / "sem.png")
    mapper = MaskFormerSemanticDatasetMapper(
        augmentations=[], image_format="RGB", ignore_label=255, size_divisibility=-1
    )
    out = mapper(
        {"file_name": str(tmp_path / "img.png"), "sem_seg_file_name": str(tmp_path / "sem.png")}
    )
    assert len(out["instances"]) == 0
    assert out["instances"].gt_masks.tensor.shape == (0, 8, 8)


def test_semantic_16bit_labels(tmp_path):
    # ADE20K-full style: uint16 TIFF labels with a large class index and ignore 65535.
    labels = np.full((10, 12), 65535, np.uint16)
    labels[2:, :6] = 846
    labels[2:, 6:] = 300
    Image.fromarray(labels).save(tmp_path / "sem.tif")
    Image.fromarray(np.zeros((10, 12, 3), np.uint8)).save(tmp_path / "img.png")
    mapper = MaskFormerSemanticDatasetMapper(
        augmentations=[T.ResizeShortestEdge(20, 1000)],
        image_format="RGB",
        ignore_label=65535,
        size_divisibility=-1,
        num_classes=847,
    )
    out = mapper(
        {"file_name": str(tmp_path / "img.png"), "sem_seg_file_name": str(tmp_path / "sem.tif")}
    )
    assert out["sem_seg"].shape == (20, 24)
    assert set(torch.unique(out["sem_seg"]).tolist()) == {300, 846, 65535}
    assert sorted(out["instances"].gt_classes.tolist()) == [300, 846]


# ---------------------------------------------------------------- panoptic


@pytest.mark.parametrize("with_sem_seg", [True, False])
def test_panoptic_instances_and_sem_seg(two_halves, with_sem_seg):
    cfg = make_cfg("mask_former_panoptic", SIZE_DIVISIBILITY=64)
    mapper = build_dataset_mapper(cfg, True)
    assert type(mapper) is MaskFormerPanopticDatasetMapper
    out = mapper(panoptic_record(two_halves, with_sem_seg))
    assert out["image"].shape == (3, 64, 64) and out["sem_seg"].shape == (64, 64)
    inst = out["instances"]
    assert inst.gt_classes.tolist() == [1, 2]
    assert not inst.has("gt_boxes")
    # masks follow the segments and agree with sem_seg (read or derived)
    for cls, mask in zip(inst.gt_classes, inst.gt_masks.tensor):
        assert torch.equal(mask, out["sem_seg"] == cls)
    assert (out["sem_seg"][:4] == 255).all()
    assert (out["sem_seg"][40:] == 255).all()  # padding


def test_panoptic_skips_crowd_and_checks_categories(two_halves):
    mapper = MaskFormerPanopticDatasetMapper(
        augmentations=[], image_format="RGB", ignore_label=255, size_divisibility=-1, num_classes=3
    )
    record = panoptic_record(two_halves)
    record["segments_info"][1]["iscrowd"] = 1
    out = mapper(record)
    assert out["instances"].gt_classes.tolist() == [1]
    assert (out["sem_seg"][10:, 40] == 2).all()  # the crowd region keeps its class

    record = panoptic_record(two_halves)
    record["segments_info"][0]["category_id"] = 3
    with pytest.raises(ValueError, match="category ids \\[3\\]"):
        mapper(record)


def test_panoptic_flip_consistency(two_halves):
    mapper = MaskFormerPanopticDatasetMapper(
        augmentations=[T.RandomFlip(prob=1.0)],
        image_format="RGB",
        ignore_label=255,
        size_divisibility=-1,
    )
    out = mapper(panoptic_record(two_halves, with_sem_seg=False))
    red_mask, blue_mask = out["instances"].gt_masks.tensor
    assert red_mask[10:, -1].all() and not red_mask[:, 0].any()
    assert colour_of(out["image"], red_mask) == RED
    assert colour_of(out["image"], blue_mask) == BLUE


def test_coco_panoptic_lsj_pads_with_ignore_and_adds_boxes(two_halves):
    cfg = make_cfg("coco_panoptic_lsj", IMAGE_SIZE=128, MIN_SCALE=0.5, MAX_SCALE=0.5)
    cfg.INPUT.RANDOM_FLIP = "none"
    mapper = build_dataset_mapper(cfg, True)
    assert isinstance(mapper, COCOPanopticLSJDatasetMapper)
    out = mapper(panoptic_record(two_halves))
    assert out["image"].shape == (3, 128, 128)
    # scale 0.5 of 128 fits the 40x60 image into 64 wide -> 43x64 (HxW), padded to 128
    assert (out["image"][:, 50:, :] == 128).all() and (out["image"][:, :, 70:] == 128).all()
    assert (out["sem_seg"][50:, :] == 255).all() and (out["sem_seg"][:, 70:] == 255).all()
    inst = out["instances"]
    assert inst.gt_classes.tolist() == [1, 2]
    boxes = inst.gt_boxes.tensor
    assert boxes.shape == (2, 4)
    assert boxes[0, 0] == 0 and boxes[1, 0] >= 30 and boxes[1, 2] <= 65


# ---------------------------------------------------------------- instance


def test_instance_polygons_and_rle(two_halves):
    cfg = make_cfg("mask_former_instance", SIZE_DIVISIBILITY=64)
    mapper = build_dataset_mapper(cfg, True)
    assert type(mapper) is MaskFormerInstanceDatasetMapper
    out = mapper(instance_record(two_halves))
    assert out["image"].shape == (3, 64, 64)
    assert "sem_seg" not in out
    inst = out["instances"]
    assert inst.gt_classes.tolist() == [1, 2] and inst.gt_classes.dtype == torch.int64
    left, right = inst.gt_masks.tensor
    assert colour_of(out["image"], left) == RED and colour_of(out["image"], right) == BLUE
    assert abs(int(left.sum()) - 36 * 30) <= 40  # polygon rasterisation is exact up to edges
    assert int(right.sum()) == 36 * 30
    assert not left[40:].any() and not right[:, 60:].any()  # padding is background


def test_instance_flip_and_crowd(two_halves):
    mapper = MaskFormerInstanceDatasetMapper(
        augmentations=[T.RandomFlip(prob=1.0)], image_format="RGB", size_divisibility=-1
    )
    record = instance_record(two_halves)
    record["annotations"][1]["iscrowd"] = 1
    out = mapper(record)
    (left,) = out["instances"].gt_masks.tensor
    assert out["instances"].gt_classes.tolist() == [1]
    assert left[10:, -5:].all() and not left[:, :25].any()
    assert colour_of(out["image"], left) == RED


def test_coco_instance_lsj_boxes(two_halves):
    cfg = make_cfg("coco_instance_lsj", IMAGE_SIZE=64, MIN_SCALE=1.0, MAX_SCALE=1.0)
    cfg.INPUT.RANDOM_FLIP = "none"
    mapper = build_dataset_mapper(cfg, True)
    assert isinstance(mapper, COCOInstanceLSJDatasetMapper)
    out = mapper(instance_record(two_halves))
    inst = out["instances"]
    assert out["image"].shape == (3, 64, 64)
    assert inst.gt_boxes.tensor.shape == (2, 4)
    for box, mask in zip(inst.gt_boxes.tensor, inst.gt_masks.tensor):
        ys, xs = torch.nonzero(mask, as_tuple=True)
        assert box.tolist() == [
            xs.min().item(),
            ys.min().item(),
            xs.max().item() + 1,
            ys.max().item() + 1,
        ]


def test_instance_bad_annotations(two_halves):
    mapper = MaskFormerInstanceDatasetMapper(
        augmentations=[], image_format="RGB", size_divisibility=-1, num_classes=2
    )
    record = instance_record(two_halves)
    with pytest.raises(ValueError, match="category ids \\[2\\]"):
        mapper(record)
    mapper.num_classes = 3
    record["annotations"][1]["segmentation"]["size"] = [10, 10]
    with pytest.raises(ValueError, match="RLE size"):
        mapper(record)
    record = instance_record(two_halves)
    record["annotations"][0]["segmentation"] = [[1, 2, 3, 4]]
    with pytest.raises(ValueError, match="at least 3 points"):
        mapper(record)
    record = instance_record(two_halves)
    record["annotations"][0]["segmentation"] = [[0, 0, 120, 0, 120, 80, 0, 80]]  # 2x too large
    with pytest.raises(ValueError, match="outside the 60x40 image"):
        mapper(record)
    record = instance_record(two_halves)
    del record["annotations"][0]["segmentation"]
    with pytest.raises(ValueError, match="segmentation"):
        mapper(record)


# ---------------------------------------------------------------- bad files


def test_missing_and_corrupt_image(two_halves, tmp_path):
    mapper = MaskFormerSemanticDatasetMapper(
        augmentations=[], image_format="RGB", ignore_label=255, size_divisibility=-1
    )
    record = semantic_record(two_halves)
    record["file_name"] = str(tmp_path / "nope.jpg")
    with pytest.raises(FileNotFoundError, match="file_name .*nope.jpg"):
        mapper(record)
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8 this is not a jpeg")
    record["file_name"] = str(tmp_path / "broken.jpg")
    with pytest.raises(ValueError, match="broken.jpg"):
        mapper(record)


def test_label_size_and_values_checked(two_halves, tmp_path):
    mapper = MaskFormerSemanticDatasetMapper(
        augmentations=[], image_format="RGB", ignore_label=255, size_divisibility=-1, num_classes=2
    )
    with pytest.raises(ValueError, match="sem_seg_file_name .*labels \\[2\\]"):
        mapper(semantic_record(two_halves))
    Image.fromarray(np.ones((20, 60), np.uint8)).save(tmp_path / "small.png")
    record = {**semantic_record(two_halves), "sem_seg_file_name": str(tmp_path / "small.png")}
    with pytest.raises(ValueError, match="small.png.*60x20"):
        mapper(record)
    Image.fromarray(np.ones((40, 60, 3), np.uint8)).save(tmp_path / "colour.png")
    record = {**semantic_record(two_halves), "sem_seg_file_name": str(tmp_path / "colour.png")}
    with pytest.raises(ValueError, match="colour image"):
        mapper(record)
    record = {**semantic_record(two_halves), "height": 41}
    with pytest.raises(ValueError, match="height"):
        mapper(record)


def test_panoptic_png_size_checked(two_halves, tmp_path):
    Image.fromarray(np.zeros((40, 30, 3), np.uint8)).save(tmp_path / "pan_small.png")
    mapper = MaskFormerPanopticDatasetMapper(
        augmentations=[], image_format="RGB", ignore_label=255, size_divisibility=-1
    )
    record = {**panoptic_record(two_halves), "pan_seg_file_name": str(tmp_path / "pan_small.png")}
    with pytest.raises(ValueError, match="pan_seg_file_name .*pan_small.png"):
        mapper(record)


@pytest.mark.parametrize("mode", ["L", "RGBA"])
def test_grayscale_and_rgba_images_are_converted_and_logged(tmp_path, mode, caplog):
    from mask2former.data.dataset_mappers import inputs

    inputs._reported_conversions.clear()
    channels = {"L": (), "RGBA": (4,)}[mode]
    pixels = np.full((8, 8) + channels, 200, np.uint8)
    Image.fromarray(pixels, mode).save(tmp_path / "img.png")
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "sem.png")
    mapper = MaskFormerSemanticDatasetMapper(
        augmentations=[], image_format="BGR", ignore_label=255, size_divisibility=-1
    )
    record = {
        "file_name": str(tmp_path / "img.png"),
        "sem_seg_file_name": str(tmp_path / "sem.png"),
    }
    with caplog.at_level(logging.WARNING):
        out = mapper(record)
        mapper(record)
    assert out["image"].shape == (3, 8, 8) and (out["image"] == 200).all()
    messages = [r.getMessage() for r in caplog.records if "converting" in r.getMessage()]
    assert len(messages) == 1 and mode in messages[0] and "img.png" in messages[0]


# ---------------------------------------------------------------- build + augmentations


def test_build_dataset_mapper_names_and_test_time():
    with pytest.raises(KeyError, match="mask_former_semantic"):
        build_dataset_mapper(make_cfg("no_such_mapper"), True)
    assert isinstance(build_dataset_mapper(make_cfg("coco_instance_lsj"), False), DatasetMapper)
    with pytest.raises(ValueError, match="DatasetMapper"):
        MaskFormerSemanticDatasetMapper(
            False, augmentations=[], image_format="RGB", ignore_label=255, size_divisibility=-1
        )


def test_published_configs_build_their_mapper_augmentations():
    cfg = make_cfg(
        "mask_former_semantic",
        COLOR_AUG_SSD=True,
        **{"CROP.ENABLED": True, "CROP.TYPE": "absolute", "CROP.SIZE": [512, 512]}
    )
    cfg.INPUT.CROP.SINGLE_CATEGORY_MAX_AREA = 1.0
    augs = build_dataset_mapper(cfg, True).augmentations.augs
    assert [type(a).__name__ for a in augs] == [
        "ResizeShortestEdge",
        "RandomCrop_CategoryAreaConstraint",
        "ColorAugSSD",
        "RandomFlip",
    ]
    cfg.INPUT.DATASET_MAPPER_NAME = "mask_former_instance"
    augs = build_dataset_mapper(cfg, True).augmentations.augs
    assert type(augs[1]) is T.RandomCrop
    cfg.INPUT.DATASET_MAPPER_NAME = "coco_instance_lsj"
    augs = build_dataset_mapper(cfg, True).augmentations.augs
    assert [type(a).__name__ for a in augs] == ["RandomFlip", "ResizeScale", "FixedSizeCrop"]


def test_color_aug_ssd_changes_colours_only():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
    neutral = PhotometricDistortTransform("RGB", 0.0, 1.0, 1.0, 0, True)
    assert np.array_equal(neutral.apply_image(image), image)
    bright = PhotometricDistortTransform("RGB", 20.0, 1.0, 1.0, 0, True)
    assert np.array_equal(bright.apply_image(image), np.clip(image.astype(int) + 20, 0, 255))
    seg = rng.integers(0, 5, (16, 16))
    assert np.array_equal(bright.apply_segmentation(seg), seg)

    np.random.seed(1)
    aug = ColorAugSSD("RGB")
    changed = sum(
        not np.array_equal(aug.get_transform(image).apply_image(image), image) for _ in range(10)
    )
    assert changed >= 8  # each of 4 steps fires with probability 1/2
    with pytest.raises(ValueError, match="FORMAT"):
        ColorAugSSD("YUV-BT.601")


def published_config_paths():
    root = Path(__file__).resolve().parents[1] / "configs"
    # Image configs only: the YouTube-VIS ones are video models with their own mapper.
    paths = sorted(
        p for p in root.rglob("*.yaml") if "quickstart" not in p.parts and not p.relative_to(root).parts[0].startswith("youtubevis")
    )
    bases = {p for p in paths if p.name.startswith("Base-")}
    return [p for p in paths if p not in bases]


def test_every_published_config_builds_its_training_mapper():
    """Each published config's mapper builds from the config alone (metadata of its
    training dataset, augmentations), without reading any dataset file."""
    paths = published_config_paths()
    if not paths:
        pytest.skip("no published configs found under configs/")
    built = {}
    for path in paths:
        cfg = build_config(path)
        mapper = build_dataset_mapper(cfg, is_train=True)
        name = cfg.INPUT.DATASET_MAPPER_NAME
        built.setdefault(name, type(mapper).__name__)
        # the class count the mapper checks labels against is the config's class count
        if mapper.num_classes is not None:
            assert mapper.num_classes == cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES, path
    assert len(paths) >= 40
    assert set(built) == {
        "mask_former_semantic",
        "mask_former_panoptic",
        "mask_former_instance",
        "coco_instance_lsj",
        "coco_panoptic_lsj",
    }
