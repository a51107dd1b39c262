"""Choosing a dataset mapper by `cfg.INPUT.DATASET_MAPPER_NAME`."""

import logging
from typing import Callable, Dict, Optional

from detectron2.data import DatasetMapper, MetadataCatalog
from detectron2.utils.registry import Registry
from PIL import UnidentifiedImageError

from .inputs import UnreadableImageError

logger = logging.getLogger(__name__)

__all__ = [
    "DATASET_MAPPER_REGISTRY",
    "SkipUnreadableImages",
    "EvalDatasetMapper",
    "build_dataset_mapper",
    "dataset_metadata",
    "register_mapper",
]

DATASET_MAPPER_REGISTRY = Registry("DATASET_MAPPER")
DATASET_MAPPER_REGISTRY.__doc__ = """
Training dataset mappers, keyed by the published INPUT.DATASET_MAPPER_NAME values
(mask_former_semantic, mask_former_panoptic, mask_former_instance, coco_instance_lsj,
coco_panoptic_lsj). Each is a class built with `cls(cfg, is_train)`.
"""

# Registry keys are class names by default; the config speaks of these short names.
_MAPPER_NAMES: Dict[str, str] = {}


def register_mapper(config_name: str) -> Callable:
    """Class decorator: register a mapper under the INPUT.DATASET_MAPPER_NAME `config_name`."""

    def wrap(cls):
        DATASET_MAPPER_REGISTRY.register(cls)
        _MAPPER_NAMES[config_name] = cls.__name__
        return cls

    return wrap


def dataset_metadata(cfg) -> dict:
    """Metadata of the first training dataset (where ignore_label and class lists come
    from), or {} when the config names no training dataset."""
    if not cfg.DATASETS.TRAIN:
        return {}
    return MetadataCatalog.get(cfg.DATASETS.TRAIN[0]).as_dict()


def build_dataset_mapper(cfg, is_train: bool = True):
    """The mapper for `cfg.INPUT.DATASET_MAPPER_NAME`.

    At training time, the Mask2Former mapper of that name. At test time, detectron2's
    `DatasetMapper(cfg, False)` (resize to MIN_SIZE_TEST, no annotations), which is what
    evaluation needs for every task.
    """
    if not is_train:
        return EvalDatasetMapper(cfg, is_train=False)
    name = cfg.INPUT.DATASET_MAPPER_NAME
    if name not in _MAPPER_NAMES:
        raise KeyError(
            f"INPUT.DATASET_MAPPER_NAME {name!r} is not a known mapper; "
            f"choose one of {sorted(_MAPPER_NAMES)}."
        )
    mapper = DATASET_MAPPER_REGISTRY.get(_MAPPER_NAMES[name])(cfg, is_train=True)
    if cfg.MASK2FORMER.SKIP_UNREADABLE_IMAGES:
        return SkipUnreadableImages(mapper)
    return mapper


class EvalDatasetMapper(DatasetMapper):
    """detectron2's test-time `DatasetMapper`, whose errors for a truncated or corrupt image
    name the file (PIL's own message does not)."""

    def __call__(self, dataset_dict):
        try:
            return super().__call__(dataset_dict)
        except FileNotFoundError:
            raise
        except (UnidentifiedImageError, OSError, SyntaxError) as e:
            raise UnreadableImageError(
                f"file_name '{dataset_dict.get('file_name')}' is not a readable image ({e})."
            ) from e


class SkipUnreadableImages:
    """Training mapper wrapper for MASK2FORMER.SKIP_UNREADABLE_IMAGES: a sample whose image
    cannot be decoded is skipped (the loaders then draw another one) and counted."""

    def __init__(self, mapper: Callable):
        self.mapper = mapper
        self.num_skipped = 0

    def __call__(self, dataset_dict: dict) -> Optional[dict]:
        try:
            return self.mapper(dataset_dict)
        except UnreadableImageError as e:
            self.num_skipped += 1
            logger.warning(
                f"Skipped an unreadable image ({self.num_skipped} so far in this process, "
                f"MASK2FORMER.SKIP_UNREADABLE_IMAGES): {e}"
            )
            return None
