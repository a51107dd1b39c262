"""Turning augmented label maps into the tensors a mapper returns.

Mask2Former is trained on (class, binary mask) pairs whatever the task, so semantic,
panoptic and instance labels all end up as `Instances(gt_classes, gt_masks)`.
"""

from typing import Iterable, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from detectron2.structures import BitMasks, Boxes, Instances

__all__ = [
    "IMAGE_PAD_VALUE",
    "image_to_tensor",
    "pad_bottom_right",
    "padding_to_divisibility",
    "instances_from_sem_seg",
    "instances_from_masks",
    "instances_from_panoptic",
]

# Value of padded image pixels: the published mappers pad with 128 (close to the pixel
# mean), so padding is almost zero after normalisation.
IMAGE_PAD_VALUE = 128


def image_to_tensor(image: np.ndarray) -> torch.Tensor:
    """(H, W, 3) uint8 array -> (3, H, W) uint8 tensor."""
    return torch.as_tensor(np.ascontiguousarray(image.transpose(2, 0, 1)))


def padding_to_divisibility(height: int, width: int, size_divisibility: int) -> Tuple[int, int]:
    """(extra rows, extra columns) that make (height, width) multiples of size_divisibility.

    With the published configs the crop equals SIZE_DIVISIBILITY, so this pads every
    training image to exactly the crop size.
    """
    if size_divisibility <= 0:
        return 0, 0
    return (-height) % size_divisibility, (-width) % size_divisibility


def pad_bottom_right(tensor: torch.Tensor, extra_rows: int, extra_cols: int, value) -> torch.Tensor:
    """Pad the last two dims of a (..., H, W) tensor at the bottom and right with `value`."""
    if extra_rows == 0 and extra_cols == 0:
        return tensor
    return F.pad(tensor, (0, extra_cols, 0, extra_rows), value=value).contiguous()


def instances_from_masks(
    image_shape: Tuple[int, int],
    classes: Iterable[int],
    masks: torch.Tensor,
    with_boxes: bool,
    drop_empty: bool = True,
) -> Instances:
    """Instances with gt_classes int64 (N,), gt_masks BitMasks (N, H, W), optional gt_boxes.

    Masks without a single pixel (e.g. cropped away) are dropped: they carry no
    supervision and would train the matched query towards an empty mask. Callers that
    know every mask is non-empty pass drop_empty=False to skip the check.
    """
    classes = torch.as_tensor(list(classes), dtype=torch.int64)
    masks = masks.reshape(-1, *image_shape).to(torch.bool)
    if drop_empty:
        keep = masks.flatten(1).any(dim=1)
        classes, masks = classes[keep], masks[keep]
    instances = Instances(image_shape)
    instances.gt_classes = classes
    instances.gt_masks = BitMasks(masks)
    if with_boxes:
        instances.gt_boxes = (
            instances.gt_masks.get_bounding_boxes() if len(masks) else Boxes(torch.zeros(0, 4))
        )
    return instances


def instances_from_sem_seg(sem_seg: torch.Tensor, ignore_label: int) -> Instances:
    """One instance per class present in `sem_seg` (H, W) int64; ignored pixels excluded."""
    labelled = sem_seg[sem_seg != ignore_label]
    if labelled.numel() and labelled.min() >= 0:
        # Counting is linear time; torch.unique sorts every pixel.
        classes = torch.nonzero(torch.bincount(labelled), as_tuple=True)[0]
    else:
        classes = torch.as_tensor(np.unique(labelled.numpy()))
    masks = sem_seg[None] == classes[:, None, None]
    return instances_from_masks(
        tuple(sem_seg.shape), classes.tolist(), masks, with_boxes=False, drop_empty=False
    )


def instances_from_panoptic(
    segment_ids: torch.Tensor, segments_info: list, with_boxes: bool
) -> Instances:
    """One instance per non-crowd segment of a panoptic id map `segment_ids` (H, W) int64.

    `segments_info` entries carry "id" (the segment id in the map), "category_id"
    (already contiguous) and optionally "iscrowd"; crowd segments are skipped.
    """
    # Segments cropped away are left out before their masks are built (numpy's unique is
    # several times faster than torch's on CPU).
    present = set(np.unique(segment_ids.numpy()).tolist())
    kept = [s for s in segments_info if not s.get("iscrowd", 0) and s["id"] in present]
    ids = torch.as_tensor([s["id"] for s in kept], dtype=segment_ids.dtype)
    masks = segment_ids[None] == ids[:, None, None]
    classes = [s["category_id"] for s in kept]
    return instances_from_masks(
        tuple(segment_ids.shape), classes, masks, with_boxes, drop_empty=False
    )
