"""Training augmentations of the Mask2Former recipes, built from a config.

Two recipes exist:
- `build_mask_former_augmentations`: short-edge random resize, optional random crop
  (category-area constrained for semantic/panoptic, plain for instance), optional SSD
  photometric distortion, horizontal flip. Used by the ADE20K, Cityscapes and Mapillary
  Vistas configs.
- `build_lsj_augmentations`: large-scale jitter (flip, random rescale of a square
  IMAGE_SIZE canvas by MIN_SCALE..MAX_SCALE, fixed-size crop/pad). Used by COCO.
"""

from typing import List

import cv2
import numpy as np

from detectron2.data import transforms as T
from fvcore.transforms.transform import Transform

__all__ = [
    "ColorAugSSD",
    "PhotometricDistortTransform",
    "build_mask_former_augmentations",
    "build_lsj_augmentations",
]


class PhotometricDistortTransform(Transform):
    """SSD-style colour distortion with fixed, already-drawn parameters.

    Brightness shift, then contrast/saturation/hue (contrast either first or last). A
    parameter at its neutral value (0 shift, factor 1) leaves that step out. Labels and
    coordinates are unchanged.
    """

    def __init__(
        self,
        image_format: str,
        brightness_delta: float,
        contrast_factor: float,
        saturation_factor: float,
        hue_delta: int,
        contrast_first: bool,
    ):
        super().__init__()
        self._set_attributes(locals())

    def apply_image(self, img: np.ndarray) -> np.ndarray:
        # OpenCV's HSV conversion expects BGR.
        bgr = img[:, :, ::-1] if self.image_format == "RGB" else img
        out = bgr.astype(np.float32)
        if self.brightness_delta:
            out = out + self.brightness_delta
        if self.contrast_first and self.contrast_factor != 1:
            out = out * self.contrast_factor
        out = np.clip(out, 0, 255).astype(np.uint8)
        if self.saturation_factor != 1 or self.hue_delta:
            hsv = cv2.cvtColor(out, cv2.COLOR_BGR2HSV).astype(np.int32)
            if self.saturation_factor != 1:
                hsv[:, :, 1] = np.clip(hsv[:, :, 1] * self.saturation_factor, 0, 255)
            if self.hue_delta:
                hsv[:, :, 0] = (hsv[:, :, 0] + self.hue_delta) % 180  # OpenCV hue is 0..179
            out = cv2.cvtColor(hsv.astype(np.uint8), cv2.COLOR_HSV2BGR)
        if not self.contrast_first and self.contrast_factor != 1:
            out = np.clip(out.astype(np.float32) * self.contrast_factor, 0, 255).astype(np.uint8)
        return np.ascontiguousarray(out[:, :, ::-1] if self.image_format == "RGB" else out)

    def apply_coords(self, coords: np.ndarray) -> np.ndarray:
        return coords

    def apply_segmentation(self, segmentation: np.ndarray) -> np.ndarray:
        return segmentation

    def inverse(self) -> Transform:
        raise NotImplementedError("A photometric distortion cannot be inverted.")


class ColorAugSSD(T.Augmentation):
    """Random SSD photometric distortion (COLOR_AUG_SSD): each of brightness (+-32),
    contrast (x0.5..1.5), saturation (x0.5..1.5) and hue (+-18 of 180) is applied with
    probability 1/2; contrast goes first or last with equal chance."""

    def __init__(
        self,
        image_format: str,
        brightness_delta: int = 32,
        contrast_range=(0.5, 1.5),
        saturation_range=(0.5, 1.5),
        hue_delta: int = 18,
    ):
        super().__init__()
        if image_format not in ("RGB", "BGR"):
            raise ValueError(f"ColorAugSSD needs INPUT.FORMAT RGB or BGR, got {image_format!r}.")
        self._init(locals())

    def get_transform(self, image) -> Transform:
        def coin():
            return self._rand_range() < 0.5

        brightness = (
            self._rand_range(-self.brightness_delta, self.brightness_delta) if coin() else 0.0
        )
        contrast_first = coin()
        contrast = self._rand_range(*self.contrast_range) if coin() else 1.0
        saturation = self._rand_range(*self.saturation_range) if coin() else 1.0
        hue = int(np.random.randint(-self.hue_delta, self.hue_delta + 1)) if coin() else 0
        return PhotometricDistortTransform(
            self.image_format, brightness, contrast, saturation, hue, contrast_first
        )


def build_mask_former_augmentations(
    cfg, crop_uses_categories: bool, ignore_label: int = 255
) -> List[T.Augmentation]:
    """The ADE20K/Cityscapes/Vistas training recipe.

    Args:
        crop_uses_categories: retry crops (up to 10 times) until no category covers more
            than INPUT.CROP.SINGLE_CATEGORY_MAX_AREA of the crop (needs a sem_seg); the
            instance mapper passes False and gets a plain random crop.
        ignore_label: label left out of that area count.
    """
    augs = [
        T.ResizeShortestEdge(
            cfg.INPUT.MIN_SIZE_TRAIN, cfg.INPUT.MAX_SIZE_TRAIN, cfg.INPUT.MIN_SIZE_TRAIN_SAMPLING
        )
    ]
    if cfg.INPUT.CROP.ENABLED:
        if crop_uses_categories:
            augs.append(
                T.RandomCrop_CategoryAreaConstraint(
                    cfg.INPUT.CROP.TYPE,
                    cfg.INPUT.CROP.SIZE,
                    cfg.INPUT.CROP.SINGLE_CATEGORY_MAX_AREA,
                    ignore_label,
                )
            )
        else:
            augs.append(T.RandomCrop(cfg.INPUT.CROP.TYPE, cfg.INPUT.CROP.SIZE))
    if cfg.INPUT.COLOR_AUG_SSD:
        augs.append(ColorAugSSD(cfg.INPUT.FORMAT))
    augs.extend(_flip(cfg))
    return augs


def build_lsj_augmentations(cfg) -> List[T.Augmentation]:
    """Large-scale jitter: flip, ResizeScale(MIN_SCALE..MAX_SCALE of IMAGE_SIZE), then a
    fixed IMAGE_SIZE x IMAGE_SIZE crop that pads smaller images (image with 128)."""
    size = cfg.INPUT.IMAGE_SIZE
    return _flip(cfg) + [
        T.ResizeScale(
            min_scale=cfg.INPUT.MIN_SCALE,
            max_scale=cfg.INPUT.MAX_SCALE,
            target_height=size,
            target_width=size,
        ),
        T.FixedSizeCrop(crop_size=(size, size)),
    ]


def _flip(cfg) -> List[T.Augmentation]:
    if cfg.INPUT.RANDOM_FLIP == "none":
        return []
    if cfg.INPUT.RANDOM_FLIP not in ("horizontal", "vertical"):
        raise ValueError(
            f"INPUT.RANDOM_FLIP must be 'horizontal', 'vertical' or 'none', "
            f"got {cfg.INPUT.RANDOM_FLIP!r}."
        )
    return [
        T.RandomFlip(
            horizontal=cfg.INPUT.RANDOM_FLIP == "horizontal",
            vertical=cfg.INPUT.RANDOM_FLIP == "vertical",
        )
    ]
