"""Configuration keys of Mask2Former on top of detectron2's defaults.

`add_maskformer2_config(cfg)` adds every key the published configs use, with the
published defaults, so that each published yaml merges unchanged. Keys that are
this project's own live under `cfg.MASK2FORMER` so that they can never clash with
a key of the published configs (see `_add_project_config`).

`build_config` is the one way every entry point (trainer, demo, tools, benchmarks,
tests) builds a config; `use_cpu_if_no_cuda` is the one CUDA-to-CPU fallback.
"""
import os
from typing import Callable, Iterable, Optional, Sequence

import torch
from detectron2.config import CfgNode as CN
from detectron2.config import get_cfg

__all__ = ["add_deeplab_config", "add_maskformer2_config", "build_config", "use_cpu_if_no_cuda"]


def build_config(
    config_file: Optional[str] = None,
    opts: Sequence[str] = (),
    extra_configs: Iterable[Callable[[CN], None]] = (),
) -> CN:
    """detectron2's defaults with DeepLab's and Mask2Former's keys, then `config_file`,
    then `opts`; the result is not frozen.

    Args:
        config_file: a yaml merged over the defaults; None or "" for the defaults alone.
        opts: overrides as a flat KEY VALUE list (command-line style), merged last.
        extra_configs: further `add_*_config(cfg)` functions (e.g. a video model's keys),
            applied after Mask2Former's and before any merge, so that the file can set them.

    Raises:
        FileNotFoundError: `config_file` does not exist.
    """
    cfg = get_cfg()
    add_deeplab_config(cfg)
    add_maskformer2_config(cfg)
    for add_config in extra_configs:
        add_config(cfg)
    if config_file:
        if not os.path.isfile(config_file):
            raise FileNotFoundError(f"Config file '{config_file}' does not exist.")
        cfg.merge_from_file(str(config_file))
    cfg.merge_from_list(list(opts))
    return cfg


def use_cpu_if_no_cuda(cfg: CN) -> bool:
    """Set MODEL.DEVICE to "cpu" when it names CUDA and CUDA is not available (detectron2
    defaults to "cuda"; a CPU-only machine should still run). Keeps `cfg` frozen if it
    was. Returns whether the device was changed, so that the caller can say so."""
    if torch.device(cfg.MODEL.DEVICE).type != "cuda" or torch.cuda.is_available():
        return False
    frozen = cfg.is_frozen()
    cfg.defrost()
    cfg.MODEL.DEVICE = "cpu"
    if frozen:
        cfg.freeze()
    return True


def add_deeplab_config(cfg):
    """Keys of detectron2's DeepLab project, which the published configs rely on
    (poly schedule, deeplab stem, crop retries).

    The keys of `detectron2.projects.deeplab.add_deeplab_config`, written out so that
    building a config does not import (and register) DeepLab's model components."""
    cfg.INPUT.CROP.SINGLE_CATEGORY_MAX_AREA = 1.0
    cfg.SOLVER.POLY_LR_POWER = 0.9
    cfg.SOLVER.POLY_LR_CONSTANT_ENDING = 0.0
    cfg.MODEL.SEM_SEG_HEAD.LOSS_TYPE = "hard_pixel_mining"
    cfg.MODEL.SEM_SEG_HEAD.PROJECT_FEATURES = ["res2"]
    cfg.MODEL.SEM_SEG_HEAD.PROJECT_CHANNELS = [48]
    cfg.MODEL.SEM_SEG_HEAD.ASPP_CHANNELS = 256
    cfg.MODEL.SEM_SEG_HEAD.ASPP_DILATIONS = [6, 12, 18]
    cfg.MODEL.SEM_SEG_HEAD.ASPP_DROPOUT = 0.1
    cfg.MODEL.SEM_SEG_HEAD.USE_DEPTHWISE_SEPARABLE_CONV = False
    cfg.MODEL.RESNETS.RES5_MULTI_GRID = [1, 2, 4]
    # "deeplab" replaces the 7x7 stem conv with three 3x3 convs (the R101c configs).
    cfg.MODEL.RESNETS.STEM_TYPE = "deeplab"


def add_maskformer2_config(cfg):
    """Add the Mask2Former keys (and DeepLab's, if missing) to a detectron2 config."""
    if "SINGLE_CATEGORY_MAX_AREA" not in cfg.INPUT.CROP:
        add_deeplab_config(cfg)

    # Data
    cfg.INPUT.DATASET_MAPPER_NAME = "mask_former_semantic"
    cfg.INPUT.COLOR_AUG_SSD = False
    cfg.INPUT.SIZE_DIVISIBILITY = -1
    # Large-scale jitter (the *_lsj mappers)
    cfg.INPUT.IMAGE_SIZE = 1024
    cfg.INPUT.MIN_SCALE = 0.1
    cfg.INPUT.MAX_SCALE = 2.0

    # Solver
    cfg.SOLVER.WEIGHT_DECAY_EMBED = 0.0
    cfg.SOLVER.OPTIMIZER = "ADAMW"
    cfg.SOLVER.BACKBONE_MULTIPLIER = 0.1

    # Mask2Former model
    cfg.MODEL.MASK_FORMER = CN()
    cfg.MODEL.MASK_FORMER.DEEP_SUPERVISION = True
    cfg.MODEL.MASK_FORMER.NO_OBJECT_WEIGHT = 0.1
    cfg.MODEL.MASK_FORMER.CLASS_WEIGHT = 1.0
    cfg.MODEL.MASK_FORMER.DICE_WEIGHT = 1.0
    cfg.MODEL.MASK_FORMER.MASK_WEIGHT = 20.0
    cfg.MODEL.MASK_FORMER.NHEADS = 8
    cfg.MODEL.MASK_FORMER.DROPOUT = 0.1
    cfg.MODEL.MASK_FORMER.DIM_FEEDFORWARD = 2048
    cfg.MODEL.MASK_FORMER.ENC_LAYERS = 0
    cfg.MODEL.MASK_FORMER.DEC_LAYERS = 6
    cfg.MODEL.MASK_FORMER.PRE_NORM = False
    cfg.MODEL.MASK_FORMER.HIDDEN_DIM = 256
    cfg.MODEL.MASK_FORMER.NUM_OBJECT_QUERIES = 100
    cfg.MODEL.MASK_FORMER.TRANSFORMER_IN_FEATURE = "res5"
    cfg.MODEL.MASK_FORMER.ENFORCE_INPUT_PROJ = False
    cfg.MODEL.MASK_FORMER.TRANSFORMER_DECODER_NAME = "MultiScaleMaskedTransformerDecoder"
    # Images are padded to a multiple of this before the backbone.
    cfg.MODEL.MASK_FORMER.SIZE_DIVISIBILITY = 32
    # Point-sampled losses (PointRend-style importance sampling)
    cfg.MODEL.MASK_FORMER.TRAIN_NUM_POINTS = 112 * 112
    cfg.MODEL.MASK_FORMER.OVERSAMPLE_RATIO = 3.0
    cfg.MODEL.MASK_FORMER.IMPORTANCE_SAMPLE_RATIO = 0.75

    cfg.MODEL.MASK_FORMER.TEST = CN()
    cfg.MODEL.MASK_FORMER.TEST.SEMANTIC_ON = True
    cfg.MODEL.MASK_FORMER.TEST.INSTANCE_ON = False
    cfg.MODEL.MASK_FORMER.TEST.PANOPTIC_ON = False
    cfg.MODEL.MASK_FORMER.TEST.OBJECT_MASK_THRESHOLD = 0.0
    cfg.MODEL.MASK_FORMER.TEST.OVERLAP_THRESHOLD = 0.0
    cfg.MODEL.MASK_FORMER.TEST.SEM_SEG_POSTPROCESSING_BEFORE_INFERENCE = False

    # Pixel decoder
    cfg.MODEL.SEM_SEG_HEAD.MASK_DIM = 256
    cfg.MODEL.SEM_SEG_HEAD.TRANSFORMER_ENC_LAYERS = 0
    cfg.MODEL.SEM_SEG_HEAD.PIXEL_DECODER_NAME = "BasePixelDecoder"
    cfg.MODEL.SEM_SEG_HEAD.DEFORMABLE_TRANSFORMER_ENCODER_IN_FEATURES = ["res3", "res4", "res5"]
    cfg.MODEL.SEM_SEG_HEAD.DEFORMABLE_TRANSFORMER_ENCODER_N_POINTS = 4
    cfg.MODEL.SEM_SEG_HEAD.DEFORMABLE_TRANSFORMER_ENCODER_N_HEADS = 8

    # Swin transformer backbone
    cfg.MODEL.SWIN = CN()
    cfg.MODEL.SWIN.PRETRAIN_IMG_SIZE = 224
    cfg.MODEL.SWIN.PATCH_SIZE = 4
    cfg.MODEL.SWIN.EMBED_DIM = 96
    cfg.MODEL.SWIN.DEPTHS = [2, 2, 6, 2]
    cfg.MODEL.SWIN.NUM_HEADS = [3, 6, 12, 24]
    cfg.MODEL.SWIN.WINDOW_SIZE = 7
    cfg.MODEL.SWIN.MLP_RATIO = 4.0
    cfg.MODEL.SWIN.QKV_BIAS = True
    cfg.MODEL.SWIN.QK_SCALE = None
    cfg.MODEL.SWIN.DROP_RATE = 0.0
    cfg.MODEL.SWIN.ATTN_DROP_RATE = 0.0
    cfg.MODEL.SWIN.DROP_PATH_RATE = 0.3
    cfg.MODEL.SWIN.APE = False
    cfg.MODEL.SWIN.PATCH_NORM = True
    cfg.MODEL.SWIN.OUT_FEATURES = ["res2", "res3", "res4", "res5"]
    cfg.MODEL.SWIN.USE_CHECKPOINT = False

    # ResNet dilation of res4 (the published key; detectron2 0.6 only has RES5_DILATION)
    cfg.MODEL.RESNETS.RES4_DILATION = 1

    _add_project_config(cfg)


def _add_project_config(cfg):
    """This project's own keys, all under `cfg.MASK2FORMER`.

    They are not in the published configs; their defaults reproduce the published
    behaviour, so published yamls behave exactly as they did.
    """
    cfg.MASK2FORMER = CN()
    # Training engine. Names of bare nn.Parameter embeddings (e.g. "level_embed") that get
    # SOLVER.WEIGHT_DECAY_EMBED like nn.Embedding modules; empty = published recipe.
    cfg.MASK2FORMER.WEIGHT_DECAY_EMBED_PARAMETERS = []
    # Autocast dtype when SOLVER.AMP.ENABLED runs on CPU ("bfloat16" or "float16").
    cfg.MASK2FORMER.CPU_AMP_DTYPE = "bfloat16"
    # Inference: "float32", or "bfloat16" to run backbone, pixel decoder and transformer
    # decoder under bfloat16 autocast (post-processing stays in float32).
    cfg.MASK2FORMER.INFERENCE_DTYPE = "float32"
    # Training batches and augmentation/model randomness derived from (SEED, iteration),
    # so a resumed run continues exactly where it stopped. False = detectron2's loader.
    cfg.MASK2FORMER.RESUMABLE_TRAIN_LOADER = True
    # Extra evaluators (evaluation/README.md): Boundary AP next to mask AP, with boundary
    # width DILATION_RATIO x image diagonal; PQ of the semantic predictions next to mIoU.
    cfg.MASK2FORMER.EVAL = CN()
    cfg.MASK2FORMER.EVAL.BOUNDARY_AP = False
    cfg.MASK2FORMER.EVAL.BOUNDARY_DILATION_RATIO = 0.02
    cfg.MASK2FORMER.EVAL.SEMANTIC_PQ = False
    # A truncated or corrupt training image stops training with its file name (default),
    # or, when True, the sample is skipped (another one is drawn) and the skips are counted.
    cfg.MASK2FORMER.SKIP_UNREADABLE_IMAGES = False
