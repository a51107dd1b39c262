"""Augmenting the frames of a clip: some augmentations draw once per clip, others per frame.

The published video recipe is crop (INPUT.CROP), short-edge resize, flip, then the
optional INPUT.AUGMENTATIONS. A "*_by_clip" sampling style (`choice_by_clip`,
`range_by_clip`, RANDOM_FLIP `flip_by_clip`) draws one transform for the whole clip and
applies it to every frame, so that an object keeps its size and side across frames; the
plain styles draw per frame as the image recipe does. The crop and the extra
INPUT.AUGMENTATIONS are drawn once per clip.
"""

from typing import List, Sequence, Tuple

import numpy as np

from detectron2.data import transforms as T

__all__ = ["ClipAugmentation", "build_clip_augmentation"]


class ClipAugmentation:
    """Apply `augmentations` in order to the frames of one clip.

    An augmentation marked per clip draws its transform on the first frame and applies
    that same transform to every frame; the others draw a transform for each frame. All
    frames must have the same size.
    """

    def __init__(self, augmentations: Sequence[T.Augmentation], per_clip: Sequence[bool]):
        if len(augmentations) != len(per_clip):
            raise ValueError("ClipAugmentation needs one per_clip flag per augmentation.")
        self.augmentations = list(augmentations)
        self.per_clip = list(per_clip)

    def __call__(
        self, frames: Sequence[np.ndarray]
    ) -> Tuple[List[np.ndarray], List[T.TransformList]]:
        """(H, W, C) frames -> (augmented frames, the transforms applied to each frame)."""
        inputs = [T.AugInput(frame) for frame in frames]
        applied = [[] for _ in frames]
        for aug, per_clip in zip(self.augmentations, self.per_clip):
            if per_clip:
                transform = aug(inputs[0])
                for aug_input in inputs[1:]:
                    aug_input.transform(transform)
                transforms = [transform] * len(inputs)
            else:
                transforms = [aug(aug_input) for aug_input in inputs]
            for frame_transforms, transform in zip(applied, transforms):
                frame_transforms.append(transform)
        return [i.image for i in inputs], [T.TransformList(t) for t in applied]

    def __repr__(self):
        parts = [
            f"{a}{' (per clip)' if c else ''}" for a, c in zip(self.augmentations, self.per_clip)
        ]
        return "ClipAugmentation[" + ", ".join(parts) + "]"


_SAMPLING_STYLES = ("choice", "range", "choice_by_clip", "range_by_clip")
_FLIPS = ("none", "horizontal", "vertical", "flip_by_clip")


def build_clip_augmentation(cfg, is_train: bool) -> ClipAugmentation:
    """The published video augmentations from `cfg.INPUT` (see the module docstring).

    At test time: short-edge resize to INPUT.MIN_SIZE_TEST (at most MAX_SIZE_TEST).
    """
    if not is_train:
        resize = T.ResizeShortestEdge(cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST, "choice")
        return ClipAugmentation([resize], [True])

    augs, per_clip = [], []
    if cfg.INPUT.CROP.ENABLED:
        augs.append(T.RandomCrop(cfg.INPUT.CROP.TYPE, cfg.INPUT.CROP.SIZE))
        per_clip.append(True)

    sampling = cfg.INPUT.MIN_SIZE_TRAIN_SAMPLING
    if sampling not in _SAMPLING_STYLES:
        raise ValueError(
            f"INPUT.MIN_SIZE_TRAIN_SAMPLING must be one of {_SAMPLING_STYLES}, got {sampling!r}."
        )
    augs.append(
        T.ResizeShortestEdge(
            cfg.INPUT.MIN_SIZE_TRAIN, cfg.INPUT.MAX_SIZE_TRAIN, sampling.replace("_by_clip", "")
        )
    )
    per_clip.append(sampling.endswith("_by_clip"))

    flip = cfg.INPUT.RANDOM_FLIP
    if flip not in _FLIPS:
        raise ValueError(f"INPUT.RANDOM_FLIP must be one of {_FLIPS}, got {flip!r}.")
    if flip != "none":
        augs.append(T.RandomFlip(horizontal=flip != "vertical", vertical=flip == "vertical"))
        per_clip.append(flip == "flip_by_clip")

    for name in cfg.INPUT.AUGMENTATIONS:
        augs.append(_extra_augmentation(name))
        per_clip.append(True)
    return ClipAugmentation(augs, per_clip)


def _extra_augmentation(name: str) -> T.Augmentation:
    """One INPUT.AUGMENTATIONS entry, with the published ranges."""
    if name == "brightness":
        return T.RandomBrightness(0.9, 1.1)
    if name == "contrast":
        return T.RandomContrast(0.9, 1.1)
    if name == "saturation":
        return T.RandomSaturation(0.9, 1.1)
    if name == "rotation":
        return T.RandomRotation(
            [-15, 15], expand=False, center=[(0.4, 0.4), (0.6, 0.6)], sample_style="range"
        )
    raise ValueError(
        f"INPUT.AUGMENTATIONS entry {name!r} is unknown; use brightness, contrast, "
        "saturation or rotation."
    )
