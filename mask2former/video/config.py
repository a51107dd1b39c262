"""Configuration keys of video Mask2Former (video instance segmentation).

`add_maskformer2_video_config(cfg)` adds the published video keys with their published
defaults, on top of `add_maskformer2_config`, so that the published YouTube-VIS configs
merge unchanged. This project's own video keys live under `cfg.MASK2FORMER.VIDEO`.
"""
from detectron2.config import CfgNode as CN

from ..config import add_maskformer2_config

__all__ = ["add_maskformer2_video_config"]


def add_maskformer2_video_config(cfg):
    """Add the video keys (and the image Mask2Former keys, if missing) to a detectron2 config."""
    if "MASK_FORMER" not in cfg.MODEL:
        add_maskformer2_config(cfg)

    # Training clips: SAMPLING_FRAME_NUM frames within SAMPLING_FRAME_RANGE frames of a
    # reference frame, in temporal order unless SAMPLING_FRAME_SHUFFLE.
    cfg.INPUT.SAMPLING_FRAME_NUM = 2
    cfg.INPUT.SAMPLING_FRAME_RANGE = 20
    cfg.INPUT.SAMPLING_FRAME_SHUFFLE = False
    # Names of extra training augmentations applied to a whole clip; empty = published recipe.
    cfg.INPUT.AUGMENTATIONS = []

    cfg.MASK2FORMER.VIDEO = CN()
    # Inference keeps the TEST_TOPK best (query, class) pairs of a video (published: 10).
    cfg.MASK2FORMER.VIDEO.TEST_TOPK = 10
    # Long videos: inference runs on clips of at most CLIP_LENGTH frames, consecutive clips
    # sharing CLIP_OVERLAP frames on which their queries are linked. 0 = the whole video
    # at once (the published behaviour; memory grows with the video length).
    cfg.MASK2FORMER.VIDEO.CLIP_LENGTH = 0
    cfg.MASK2FORMER.VIDEO.CLIP_OVERLAP = 1
