"""Video data: YouTube-VIS-format datasets (the published names are registered on import)
and the video dataset mapper."""

from . import synthetic_videos  # noqa: F401  (registers the built-in synthetic videos)
from .augmentations import ClipAugmentation, build_clip_augmentation
from .dataset_mapper import YTVISDatasetMapper, sample_frame_indices
from .ytvis import (
    filter_videos_without_objects,
    load_ytvis_json,
    register_published_ytvis,
    register_ytvis_dataset,
    ytvis_metadata,
)

__all__ = [
    "ClipAugmentation",
    "build_clip_augmentation",
    "YTVISDatasetMapper",
    "sample_frame_indices",
    "filter_videos_without_objects",
    "load_ytvis_json",
    "register_ytvis_dataset",
    "ytvis_metadata",
]

register_published_ytvis()
