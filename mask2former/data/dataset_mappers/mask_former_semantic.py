"""Training mapper for semantic segmentation (`mask_former_semantic`)."""

import copy
from typing import List, Optional

import numpy as np
import torch

from detectron2.config import configurable
from detectron2.data import transforms as T

from .augmentations import build_mask_former_augmentations
from .build import dataset_metadata, register_mapper
from .inputs import (
    check_label_values,
    check_record_size,
    check_same_size,
    read_image_checked,
    read_label_map,
)
from .targets import (
    IMAGE_PAD_VALUE,
    image_to_tensor,
    instances_from_sem_seg,
    pad_bottom_right,
    padding_to_divisibility,
)

__all__ = ["MaskFormerSemanticDatasetMapper"]

@register_mapper("mask_former_semantic")
class MaskFormerSemanticDatasetMapper:
    """Map a record with "file_name" and "sem_seg_file_name" to a training example.

    Returns the record plus:
        "image": (3, H, W) uint8 in the configured channel order,
        "sem_seg": (H, W) int64, padded with the ignore label,
        "instances": one mask per class present (ignore label excluded),
    where (H, W) is padded to a multiple of `size_divisibility`.
    """

    @configurable
    def __init__(
        self,
        is_train: bool = True,
        *,
        augmentations: List[T.Augmentation],
        image_format: str,
        ignore_label: int,
        size_divisibility: int,
        num_classes: Optional[int] = None,
        image_pad_value: int = IMAGE_PAD_VALUE,
    ):
        """
        Args:
            augmentations: applied to image and label together.
            image_format: "RGB" or "BGR".
            ignore_label: label value that is not a class (padding uses it too).
            size_divisibility: pad height and width to a multiple of this (<= 0: no pad).
            num_classes: if given, a label outside [0, num_classes) that is not the
                ignore label raises an error naming the file.
        """
        if not is_train:
            raise ValueError(
                f"{type(self).__name__} builds training targets; use detectron2's "
                "DatasetMapper(cfg, is_train=False) for evaluation."
            )
        self.is_train = is_train
        self.augmentations = T.AugmentationList(augmentations)
        self.image_format = image_format
        self.ignore_label = ignore_label
        self.size_divisibility = size_divisibility
        self.num_classes = num_classes
        self.image_pad_value = image_pad_value

    @classmethod
    def from_config(cls, cfg, is_train: bool = True):
        meta = dataset_metadata(cfg)
        ignore_label = meta.get("ignore_label", 255)
        stuff_classes = meta.get("stuff_classes")
        return {
            "is_train": is_train,
            "augmentations": build_mask_former_augmentations(
                cfg, crop_uses_categories=True, ignore_label=ignore_label
            ),
            "image_format": cfg.INPUT.FORMAT,
            "ignore_label": ignore_label,
            "size_divisibility": cfg.INPUT.SIZE_DIVISIBILITY,
            "num_classes": len(stuff_classes) if stuff_classes else None,
        }

    def _read_image(self, dataset_dict: dict) -> np.ndarray:
        image = read_image_checked(dataset_dict["file_name"], self.image_format)
        check_record_size(dataset_dict, image)
        return image

    def _read_sem_seg(self, dataset_dict: dict, image: np.ndarray) -> np.ndarray:
        """(H, W) label map: uint8 as stored (resized by PIL, nearest, on the same pixel
        grid as the image), wider types as float64 (detectron2 resizes non-uint8 maps
        with torch, which has no uint16)."""
        file_name = dataset_dict.pop("sem_seg_file_name")
        sem_seg = read_label_map(file_name)
        check_same_size(sem_seg, image, file_name, "sem_seg_file_name", dataset_dict["file_name"])
        check_label_values(
            sem_seg, self.num_classes, self.ignore_label, file_name, "sem_seg_file_name"
        )
        return sem_seg if sem_seg.dtype == np.uint8 else sem_seg.astype(np.float64)

    def _finish(self, dataset_dict: dict, image: np.ndarray, sem_seg: Optional[np.ndarray]):
        """Convert to tensors and pad; returns (image, sem_seg) tensors and the pad."""
        image_t = image_to_tensor(image)
        pad = padding_to_divisibility(image_t.shape[-2], image_t.shape[-1], self.size_divisibility)
        dataset_dict["image"] = pad_bottom_right(image_t, *pad, value=self.image_pad_value)
        if sem_seg is not None:
            sem_seg_t = torch.from_numpy(sem_seg.astype(np.int64))  # a writable copy
            dataset_dict["sem_seg"] = pad_bottom_right(sem_seg_t, *pad, value=self.ignore_label)
        return pad

    def __call__(self, dataset_dict: dict) -> dict:
        dataset_dict = copy.deepcopy(dataset_dict)
        if "annotations" in dataset_dict:
            raise ValueError(
                f"Record '{dataset_dict.get('file_name')}' has 'annotations': a semantic "
                "segmentation dataset must give 'sem_seg_file_name' only "
                "(use INPUT.DATASET_MAPPER_NAME mask_former_instance for instance data)."
            )
        image = self._read_image(dataset_dict)
        if "sem_seg_file_name" not in dataset_dict:
            raise ValueError(
                f"Record '{dataset_dict['file_name']}' has no 'sem_seg_file_name', which "
                "the mask_former_semantic mapper needs."
            )
        sem_seg = self._read_sem_seg(dataset_dict, image)

        aug_input = T.AugInput(image, sem_seg=sem_seg)
        self.augmentations(aug_input)
        self._finish(dataset_dict, aug_input.image, aug_input.sem_seg)
        dataset_dict["instances"] = instances_from_sem_seg(
            dataset_dict["sem_seg"], self.ignore_label
        )
        return dataset_dict
