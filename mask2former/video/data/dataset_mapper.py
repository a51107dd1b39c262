"""The video dataset mapper: a YouTube-VIS record (see `ytvis.py`) -> the model's input.

Training samples a clip: a reference frame drawn uniformly from the video, plus
SAMPLING_FRAME_NUM - 1 other frames drawn within SAMPLING_FRAME_RANGE of it (distinct
frames while the window has enough, with repetition otherwise), in temporal order unless
SAMPLING_FRAME_SHUFFLE. Every object visible in a sampled frame becomes one instance,
at the same index in every frame: where it is absent (not annotated, or augmented out of
view) its mask is empty and its id is -1. Objects absent from every sampled frame are
dropped. At test time all frames are returned, without annotations.
"""

import copy
import logging
from typing import List, Optional

import numpy as np
import torch

from detectron2.config import configurable

from mask2former.data.dataset_mappers.build import dataset_metadata
from mask2former.data.dataset_mappers.inputs import check_category_ids, read_image_checked
from mask2former.data.dataset_mappers.mask_former_instance import _segmentation_to_mask
from mask2former.data.dataset_mappers.mask_former_semantic import IMAGE_PAD_VALUE
from mask2former.data.dataset_mappers.targets import (
    image_to_tensor,
    instances_from_masks,
    pad_bottom_right,
    padding_to_divisibility,
)

from .augmentations import ClipAugmentation, build_clip_augmentation

__all__ = ["YTVISDatasetMapper", "sample_frame_indices"]

logger = logging.getLogger(__name__)


def sample_frame_indices(
    length: int, num_frames: int, frame_range: int, shuffle: bool, rng: np.random.RandomState
) -> List[int]:
    """`num_frames` indices of a video of `length` frames: a random reference frame and
    `num_frames - 1` others at most `frame_range` frames from it (see the module docstring)."""
    reference = int(rng.randint(length))
    window = [
        t
        for t in range(max(0, reference - frame_range), min(length, reference + frame_range + 1))
        if t != reference
    ]
    others = []
    if num_frames > 1:
        if window:
            replace = len(window) < num_frames - 1
            others = rng.choice(window, num_frames - 1, replace=replace).tolist()
        else:  # a single-frame video
            others = [reference] * (num_frames - 1)
    indices = sorted(others + [reference])
    if shuffle:
        rng.shuffle(indices)
    return indices


class YTVISDatasetMapper:
    """Map a video record to {"image": T (C, H, W) uint8 tensors, "height", "width",
    "instances": T Instances (gt_classes int64, gt_masks BitMasks, gt_ids int64 with -1
    where absent), "frame_idx", "file_names", ...}; "instances" only in training."""

    @configurable
    def __init__(
        self,
        is_train: bool = True,
        *,
        augmentation: ClipAugmentation,
        image_format: str,
        sampling_frame_num: int = 2,
        sampling_frame_range: int = 5,
        sampling_frame_shuffle: bool = False,
        num_classes: Optional[int] = None,
        size_divisibility: int = -1,
        image_pad_value: int = IMAGE_PAD_VALUE,
    ):
        """
        Args:
            augmentation: applied to the sampled frames and their annotations together.
            image_format: "RGB" or "BGR".
            sampling_frame_num, sampling_frame_range, sampling_frame_shuffle: the
                training clip (see the module docstring); ignored at test time.
            num_classes: if given, category ids outside [0, num_classes) raise an error.
            size_divisibility: pad training frames to a multiple of this (<= 0: no pad).
        """
        if sampling_frame_num < 1 or sampling_frame_range < 0:
            raise ValueError(
                f"INPUT.SAMPLING_FRAME_NUM must be >= 1 and INPUT.SAMPLING_FRAME_RANGE >= 0, "
                f"got {sampling_frame_num} and {sampling_frame_range}."
            )
        self.is_train = is_train
        self.augmentation = augmentation
        self.image_format = image_format
        self.sampling_frame_num = sampling_frame_num
        self.sampling_frame_range = sampling_frame_range
        self.sampling_frame_shuffle = sampling_frame_shuffle
        self.num_classes = num_classes
        self.size_divisibility = size_divisibility
        self.image_pad_value = image_pad_value
        # detectron2 seeds numpy's global generator per data-loading worker.
        self.rng = np.random
        logger.info(f"[YTVISDatasetMapper] is_train={is_train}, {augmentation}")

    @classmethod
    def from_config(cls, cfg, is_train: bool = True):
        thing_classes = dataset_metadata(cfg).get("thing_classes")
        return {
            "is_train": is_train,
            "augmentation": build_clip_augmentation(cfg, is_train),
            "image_format": cfg.INPUT.FORMAT,
            "sampling_frame_num": cfg.INPUT.SAMPLING_FRAME_NUM,
            "sampling_frame_range": cfg.INPUT.SAMPLING_FRAME_RANGE,
            "sampling_frame_shuffle": cfg.INPUT.SAMPLING_FRAME_SHUFFLE,
            "num_classes": len(thing_classes) if thing_classes else None,
            "size_divisibility": cfg.INPUT.SIZE_DIVISIBILITY,
        }

    def __call__(self, dataset_dict: dict) -> dict:
        dataset_dict = copy.deepcopy(dataset_dict)
        file_names = dataset_dict["file_names"]
        length = len(file_names)
        if self.is_train:
            frame_idx = sample_frame_indices(
                length,
                self.sampling_frame_num,
                self.sampling_frame_range,
                self.sampling_frame_shuffle,
                self.rng,
            )
        else:
            frame_idx = list(range(length))
        annotations = dataset_dict.pop("annotations", None)

        frames = [read_image_checked(file_names[t], self.image_format) for t in frame_idx]
        size = (dataset_dict["height"], dataset_dict["width"])
        for t, frame in zip(frame_idx, frames):
            if frame.shape[:2] != size:
                raise ValueError(
                    f"Frame '{file_names[t]}' is {frame.shape[1]}x{frame.shape[0]} (WxH) but its "
                    f"video {dataset_dict.get('video_id')} is {size[1]}x{size[0]}."
                )
        frames, transforms = self.augmentation(frames)
        images = [image_to_tensor(frame) for frame in frames]
        dataset_dict["frame_idx"] = frame_idx
        dataset_dict["file_names"] = [file_names[t] for t in frame_idx]
        if not self.is_train:
            dataset_dict["image"] = images
            return dataset_dict
        if annotations is None:
            raise ValueError(
                f"Video {dataset_dict.get('video_id')} ('{file_names[0]}', ...) has no "
                "'annotations', which training needs."
            )

        frame_annotations = [
            [a for a in annotations[t] if not a.get("iscrowd", 0)] for t in frame_idx
        ]
        masks, classes, track_ids = self._clip_masks(
            frame_annotations,
            transforms,
            size,
            [tuple(image.shape[-2:]) for image in images],
            [file_names[t] for t in frame_idx],
        )
        dataset_dict["image"] = []
        for t, image in enumerate(images):
            pad = padding_to_divisibility(*image.shape[-2:], self.size_divisibility)
            dataset_dict["image"].append(pad_bottom_right(image, *pad, value=self.image_pad_value))
            masks[t] = pad_bottom_right(masks[t], *pad, value=0)
        present = torch.stack([m.flatten(1).bool().any(dim=1) for m in masks], dim=1)  # (N, T)
        keep = present.any(dim=1)
        classes = [c for c, k in zip(classes, keep.tolist()) if k]
        track_ids = torch.as_tensor(track_ids, dtype=torch.int64)[keep]
        dataset_dict["instances"] = []
        for t, frame_masks in enumerate(masks):
            instances = instances_from_masks(
                tuple(frame_masks.shape[-2:]),
                classes,
                frame_masks[keep],
                with_boxes=False,
                drop_empty=False,
            )
            absent = torch.full_like(track_ids, -1)
            instances.gt_ids = torch.where(present[keep, t], track_ids, absent)
            dataset_dict["instances"].append(instances)
        return dataset_dict

    def _clip_masks(self, frame_annotations, transforms, size, out_sizes, file_names):
        """T (N, H_t, W_t) uint8 mask tensors, N classes and N track ids of the objects
        annotated in any of the T frames, in order of first appearance."""
        track_ids, classes = [], []
        for annos in frame_annotations:
            for a in annos:
                if a["id"] not in track_ids:
                    track_ids.append(a["id"])
                    classes.append(a["category_id"])
        check_category_ids(classes, self.num_classes, file_names[0], "annotations")
        index = {track_id: i for i, track_id in enumerate(track_ids)}
        masks = []
        for annos, frame_transforms, out_size, file_name in zip(
            frame_annotations, transforms, out_sizes, file_names
        ):
            frame_masks = np.zeros((len(track_ids), *out_size), dtype=np.uint8)
            for a in annos:
                frame_masks[index[a["id"]]] = _segmentation_to_mask(
                    a["segmentation"],
                    frame_transforms,
                    size,
                    out_size,
                    f"annotation {a['id']}.segmentation of '{file_name}'",
                )
            masks.append(torch.as_tensor(frame_masks))
        return masks, classes, track_ids
