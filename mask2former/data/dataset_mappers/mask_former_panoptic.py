"""Training mappers for panoptic segmentation (`mask_former_panoptic`, `coco_panoptic_lsj`)."""

import copy
import numpy as np
import torch

from detectron2.config import configurable
from detectron2.data import transforms as T
from panopticapi.utils import rgb2id

from .augmentations import build_lsj_augmentations
from .build import register_mapper
from .inputs import check_category_ids, check_same_size, read_panoptic_png
from .mask_former_semantic import MaskFormerSemanticDatasetMapper
from .targets import instances_from_panoptic, pad_bottom_right

__all__ = ["MaskFormerPanopticDatasetMapper", "COCOPanopticLSJDatasetMapper"]


def semantic_from_panoptic(
    segment_ids: np.ndarray, segments_info: list, ignore_label: int
) -> np.ndarray:
    """(H, W) class map of a panoptic id map; unlabelled pixels get `ignore_label`.

    Crowd segments keep their class, as in the semantic labels derived for COCO. The map
    is uint8 when every value fits (so it is resized like a stored label map), else
    float64.
    """
    largest = max([ignore_label] + [s["category_id"] for s in segments_info])
    dtype = np.uint8 if largest <= 255 else np.float64
    sem_seg = np.full(segment_ids.shape, ignore_label, dtype=dtype)
    for segment in segments_info:
        sem_seg[segment_ids == segment["id"]] = segment["category_id"]
    return sem_seg


@register_mapper("mask_former_panoptic")
class MaskFormerPanopticDatasetMapper(MaskFormerSemanticDatasetMapper):
    """Map a panoptic record ("file_name", "pan_seg_file_name", "segments_info" with
    contiguous "category_id", optional "sem_seg_file_name") to a training example.

    Returns "image" (3, H, W) uint8, "sem_seg" (H, W) int64 (read, or derived from the
    panoptic PNG when the record has none) and "instances" with one mask per non-crowd
    segment (gt_classes, gt_masks BitMasks, plus gt_boxes when `with_boxes`).
    """

    @configurable
    def __init__(self, is_train: bool = True, *, with_boxes: bool = False, **kwargs):
        """
        Args:
            with_boxes: also return gt_boxes (the boxes of the masks).
            kwargs: as for MaskFormerSemanticDatasetMapper.
        """
        super().__init__(is_train, **kwargs)
        self.with_boxes = with_boxes

    def __call__(self, dataset_dict: dict) -> dict:
        dataset_dict = copy.deepcopy(dataset_dict)
        image = self._read_image(dataset_dict)
        image_file = dataset_dict["file_name"]
        for field in ("pan_seg_file_name", "segments_info"):
            if field not in dataset_dict:
                raise ValueError(
                    f"Record '{image_file}' has no '{field}', which a panoptic mapper needs."
                )
        pan_file = dataset_dict.pop("pan_seg_file_name")
        segments_info = dataset_dict.pop("segments_info")
        pan_seg = read_panoptic_png(pan_file)
        check_same_size(pan_seg, image, pan_file, "pan_seg_file_name", image_file)
        check_category_ids(
            [s["category_id"] for s in segments_info], self.num_classes, pan_file, "segments_info"
        )

        if "sem_seg_file_name" in dataset_dict:
            sem_seg = self._read_sem_seg(dataset_dict, image)
        else:
            sem_seg = semantic_from_panoptic(rgb2id(pan_seg), segments_info, self.ignore_label)

        aug_input = T.AugInput(image, sem_seg=sem_seg)
        transforms = self.augmentations(aug_input)
        pan_seg = transforms.apply_segmentation(pan_seg)
        sem_seg = aug_input.sem_seg
        # Fixed-size crops pad label maps with 0, a real class: mark such padding ignored.
        inside = transforms.apply_segmentation(np.ones(image.shape[:2], dtype=np.uint8))
        sem_seg = np.where(inside > 0, sem_seg, self.ignore_label)

        pad = self._finish(dataset_dict, aug_input.image, sem_seg)
        segment_ids = torch.as_tensor(rgb2id(pan_seg).astype(np.int64))
        segment_ids = pad_bottom_right(segment_ids, *pad, value=0)  # id 0 is "no segment"
        dataset_dict["instances"] = instances_from_panoptic(
            segment_ids, segments_info, self.with_boxes
        )
        return dataset_dict


@register_mapper("coco_panoptic_lsj")
class COCOPanopticLSJDatasetMapper(MaskFormerPanopticDatasetMapper):
    """The panoptic mapper with large-scale jitter (the COCO recipe); adds gt_boxes."""

    @classmethod
    def from_config(cls, cfg, is_train: bool = True):
        args = super().from_config(cfg, is_train)
        args["augmentations"] = build_lsj_augmentations(cfg)
        args["with_boxes"] = True
        return args
