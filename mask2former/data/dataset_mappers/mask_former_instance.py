"""Training mappers for instance segmentation (`mask_former_instance`, `coco_instance_lsj`)."""

import copy
from typing import List, Optional

import numpy as np
import pycocotools.mask as mask_util
import torch

from detectron2.config import configurable
from detectron2.data import transforms as T
from detectron2.structures import polygons_to_bitmask

from .augmentations import build_lsj_augmentations, build_mask_former_augmentations
from .build import dataset_metadata, register_mapper
from .inputs import check_category_ids, check_record_size, read_image_checked
from .targets import (
    IMAGE_PAD_VALUE,
    image_to_tensor,
    instances_from_masks,
    pad_bottom_right,
    padding_to_divisibility,
)

__all__ = ["MaskFormerInstanceDatasetMapper", "COCOInstanceLSJDatasetMapper"]


def _segmentation_to_mask(
    segm, transforms: T.TransformList, image_size, out_size, where: str
) -> np.ndarray:
    """Rasterise one annotation's "segmentation" (polygons, RLE or (H, W) array, in the
    original image's coordinates) after `transforms`, as an (H', W') uint8 mask."""
    height, width = image_size
    if isinstance(segm, list):
        polygons = [np.asarray(p, dtype=np.float64).reshape(-1, 2) for p in segm]
        if not polygons or any(len(p) < 3 for p in polygons):
            raise ValueError(f"{where}: a polygon needs at least 3 points (6 numbers).")
        # Points far outside the image mean the annotation belongs to another image size.
        largest = np.max(np.concatenate(polygons), axis=0)
        smallest = np.min(np.concatenate(polygons), axis=0)
        tolerance = max(2.0, 0.01 * max(height, width))
        if (
            (smallest < -tolerance).any()
            or largest[0] > width + tolerance
            or (largest[1] > height + tolerance)
        ):
            raise ValueError(
                f"{where}: polygon points span x {smallest[0]:.0f}..{largest[0]:.0f}, "
                f"y {smallest[1]:.0f}..{largest[1]:.0f}, outside the {width}x{height} image."
            )
        polygons = [p.reshape(-1) for p in transforms.apply_polygons(polygons)]
        return polygons_to_bitmask(polygons, *out_size).astype(np.uint8)
    if isinstance(segm, dict):
        if tuple(segm.get("size", ())) != (height, width):
            raise ValueError(
                f"{where}: RLE size {segm.get('size')} (H, W) differs from the image's "
                f"({height}, {width})."
            )
        if isinstance(segm["counts"], list):  # uncompressed RLE
            segm = mask_util.frPyObjects(segm, height, width)
        mask = mask_util.decode(segm)
    elif isinstance(segm, np.ndarray):
        if segm.shape != (height, width):
            raise ValueError(
                f"{where}: mask of shape {segm.shape} differs from the image's ({height}, {width})."
            )
        mask = segm.astype(np.uint8)
    else:
        raise ValueError(
            f"{where}: 'segmentation' must be polygons, RLE or a mask, got {type(segm)}."
        )
    return transforms.apply_segmentation(mask)


@register_mapper("mask_former_instance")
class MaskFormerInstanceDatasetMapper:
    """Map a COCO-style record ("file_name", "annotations" with "category_id" already
    contiguous and "segmentation" as polygons or RLE) to a training example.

    Returns "image" (3, H, W) uint8 and "instances" (gt_classes int64, gt_masks
    BitMasks (N, H, W), plus gt_boxes when `with_boxes`); crowd annotations are skipped.
    """

    @configurable
    def __init__(
        self,
        is_train: bool = True,
        *,
        augmentations: List[T.Augmentation],
        image_format: str,
        size_divisibility: int,
        num_classes: Optional[int] = None,
        with_boxes: bool = False,
        image_pad_value: int = IMAGE_PAD_VALUE,
    ):
        """
        Args:
            augmentations: applied to the image and the annotations together.
            image_format: "RGB" or "BGR".
            size_divisibility: pad to a multiple of this (<= 0: no pad).
            num_classes: if given, category ids outside [0, num_classes) raise an error.
            with_boxes: also return gt_boxes (the boxes of the masks).
        """
        if not is_train:
            raise ValueError(
                f"{type(self).__name__} builds training targets; use detectron2's "
                "DatasetMapper(cfg, is_train=False) for evaluation."
            )
        self.is_train = is_train
        self.augmentations = T.AugmentationList(augmentations)
        self.image_format = image_format
        self.size_divisibility = size_divisibility
        self.num_classes = num_classes
        self.with_boxes = with_boxes
        self.image_pad_value = image_pad_value

    @classmethod
    def from_config(cls, cfg, is_train: bool = True):
        thing_classes = dataset_metadata(cfg).get("thing_classes")
        return {
            "is_train": is_train,
            "augmentations": build_mask_former_augmentations(cfg, crop_uses_categories=False),
            "image_format": cfg.INPUT.FORMAT,
            "size_divisibility": cfg.INPUT.SIZE_DIVISIBILITY,
            "num_classes": len(thing_classes) if thing_classes else None,
        }

    def __call__(self, dataset_dict: dict) -> dict:
        dataset_dict = copy.deepcopy(dataset_dict)
        file_name = dataset_dict["file_name"]
        image = read_image_checked(file_name, self.image_format)
        check_record_size(dataset_dict, image)
        if "annotations" not in dataset_dict:
            raise ValueError(
                f"Record '{file_name}' has no 'annotations', which the instance mappers need."
            )
        annotations = [a for a in dataset_dict.pop("annotations") if not a.get("iscrowd", 0)]
        for a in annotations:
            if "segmentation" not in a or "category_id" not in a:
                raise ValueError(
                    f"An annotation of '{file_name}' lacks 'segmentation' or 'category_id' "
                    f"(keys: {sorted(a)})."
                )
        check_category_ids(
            [a["category_id"] for a in annotations], self.num_classes, file_name, "annotations"
        )

        aug_input = T.AugInput(image)
        transforms = self.augmentations(aug_input)
        image_t = image_to_tensor(aug_input.image)
        out_size = tuple(image_t.shape[-2:])
        masks = [
            _segmentation_to_mask(
                a["segmentation"],
                transforms,
                image.shape[:2],
                out_size,
                f"annotations[{i}].segmentation of '{file_name}'",
            )
            for i, a in enumerate(annotations)
        ]
        masks = (
            torch.as_tensor(np.stack(masks))
            if masks
            else torch.zeros((0, *out_size), dtype=torch.uint8)
        )

        pad = padding_to_divisibility(*out_size, self.size_divisibility)
        dataset_dict["image"] = pad_bottom_right(image_t, *pad, value=self.image_pad_value)
        masks = pad_bottom_right(masks, *pad, value=0)
        dataset_dict["instances"] = instances_from_masks(
            tuple(dataset_dict["image"].shape[-2:]),
            [a["category_id"] for a in annotations],
            masks,
            self.with_boxes,
        )
        return dataset_dict


@register_mapper("coco_instance_lsj")
class COCOInstanceLSJDatasetMapper(MaskFormerInstanceDatasetMapper):
    """The instance mapper with large-scale jitter (the COCO recipe); adds gt_boxes."""

    @classmethod
    def from_config(cls, cfg, is_train: bool = True):
        args = super().from_config(cfg, is_train)
        args["augmentations"] = build_lsj_augmentations(cfg)
        args["with_boxes"] = True
        return args
