"""The trainer of video instance segmentation: the image `Trainer` (optimizer, schedules,
mixed precision, atomic and resumable checkpoints, multi-process CPU/GPU training) with
video records, the video dataset mapper and the YouTube-VIS evaluator."""
import logging
import os

from detectron2.data import DatasetCatalog, build_detection_test_loader

from ..engine.trainer import Trainer
from .config import add_maskformer2_video_config
from .data import synthetic_videos
from .data.dataset_mapper import YTVISDatasetMapper
from .data.ytvis import filter_videos_without_objects
from .evaluation import YTVISEvaluator

__all__ = ["VideoTrainer", "VIDEO_CONFIGS", "video_dataset_dicts"]

logger = logging.getLogger(__name__)

# The config functions a video model's config needs beyond the image model's.
VIDEO_CONFIGS = (add_maskformer2_video_config,)


def video_dataset_dicts(dataset_names, filter_empty: bool = True):
    """The video records of `dataset_names`, without videos that have no (non-crowd)
    object in any frame when `filter_empty`."""
    if isinstance(dataset_names, str):
        dataset_names = [dataset_names]
    videos = [video for name in dataset_names for video in DatasetCatalog.get(name)]
    if filter_empty:
        videos = filter_videos_without_objects(videos)
    if not videos:
        raise ValueError(f"The video datasets {list(dataset_names)} hold no (annotated) videos.")
    return videos


class VideoTrainer(Trainer):
    """`Trainer` for VideoMaskFormer: one training sample is a clip of
    INPUT.SAMPLING_FRAME_NUM frames (SOLVER.IMS_PER_BATCH clips per iteration); one test
    sample is a whole video, evaluated as YouTube-VIS."""

    @classmethod
    def train_dataset_dicts(cls, cfg):
        return video_dataset_dicts(cfg.DATASETS.TRAIN, cfg.DATALOADER.FILTER_EMPTY_ANNOTATIONS)

    @classmethod
    def build_train_loader(cls, cfg, mapper=None):
        if mapper is None:
            mapper = YTVISDatasetMapper(cfg, is_train=True)
        return super().build_train_loader(cfg, mapper=mapper)

    @classmethod
    def build_test_loader(cls, cfg, dataset_name):
        return build_detection_test_loader(
            video_dataset_dicts(dataset_name, filter_empty=False),
            mapper=YTVISDatasetMapper(cfg, is_train=False),
            num_workers=cfg.DATALOADER.NUM_WORKERS,
        )

    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_folder=None):
        if output_folder is None:
            output_folder = os.path.join(cfg.OUTPUT_DIR, "inference")
        synthetic_videos.ensure_dataset_files(dataset_name)
        return YTVISEvaluator(dataset_name, output_dir=output_folder)

    @classmethod
    def test_with_TTA(cls, cfg, model):
        raise ValueError("TEST.AUG.ENABLED: test-time augmentation is not available for video models.")
