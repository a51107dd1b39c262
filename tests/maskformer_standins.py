"""Tiny stand-in backbone and head for testing the MaskFormer meta-architecture on its own,
and a tiny real configuration (the published COCO panoptic config shrunk by overrides).

The head has the real head's interface: features -> {"pred_logits" (B, Q, K+1),
"pred_masks" (B, Q, H/4, W/4), "aux_outputs" [...]}.
"""
from pathlib import Path

import pytest
import torch
from torch import nn

from detectron2.data.catalog import Metadata
from detectron2.layers import ShapeSpec
from detectron2.modeling import Backbone

from mask2former.config import build_config
from mask2former.modeling.criterion import SetCriterion
from mask2former.modeling.matcher import HungarianMatcher
from mask2former.modeling.meta_arch.maskformer_model import MaskFormer
from mask2former.modeling.postprocessing import thing_classes_of
from mask2former.postprocessing import PostprocessOptions


class TinyBackbone(Backbone):
    """One stride-4 conv producing "res2"."""

    def __init__(self, channels=8):
        super().__init__()
        self.channels = channels
        self.conv = nn.Conv2d(3, channels, kernel_size=4, stride=4)

    def forward(self, x):
        return {"res2": self.conv(x)}

    def output_shape(self):
        return {"res2": ShapeSpec(channels=self.channels, stride=4)}


class TinyHead(nn.Module):
    """Learned queries dotted with the stride-4 features; `num_aux` auxiliary copies."""

    def __init__(self, num_queries=5, num_classes=3, channels=8, num_aux=2):
        super().__init__()
        self.num_classes = num_classes
        self.query = nn.Parameter(torch.randn(num_queries, channels))
        self.class_embed = nn.Linear(channels, num_classes + 1)
        self.num_aux = num_aux

    def forward(self, features, mask=None):
        feats = features["res2"]
        pred_masks = torch.einsum("qc,bchw->bqhw", self.query, feats)
        pred_logits = self.class_embed(self.query)[None].expand(feats.shape[0], -1, -1)
        aux = [{"pred_logits": pred_logits * (i + 1) / (self.num_aux + 1), "pred_masks": pred_masks} for i in range(self.num_aux)]
        return {"pred_logits": pred_logits, "pred_masks": pred_masks, "aux_outputs": aux}


def loss_weights(num_aux, class_weight=2.0, mask_weight=5.0, dice_weight=5.0):
    final = {"loss_ce": class_weight, "loss_mask": mask_weight, "loss_dice": dice_weight}
    weights = dict(final)
    for i in range(num_aux):
        weights.update({f"{k}_{i}": v for k, v in final.items()})
    return weights


def tiny_maskformer(num_queries=5, num_classes=3, num_aux=2, deep_supervision=True, metadata=None, **kwargs):
    """A MaskFormer built in code from the stand-ins (identity normalisation)."""
    matcher = HungarianMatcher(cost_class=2.0, cost_mask=5.0, cost_dice=5.0, num_points=64)
    criterion = SetCriterion(
        num_classes,
        matcher=matcher,
        weight_dict=loss_weights(num_aux if deep_supervision else 0),
        eos_coef=0.1,
        num_points=64,
    )
    metadata = metadata if metadata is not None else Metadata()
    options = dict(
        num_classes=num_classes,
        object_mask_threshold=0.0,
        overlap_threshold=0.0,
        resize_before_semantic=True,
        semantic_on=True,
        panoptic_on=True,
        instance_on=True,
        detections_per_image=10,
        thing_classes=thing_classes_of(metadata),
    )
    options.update(kwargs)
    return MaskFormer(
        backbone=TinyBackbone(),
        sem_seg_head=TinyHead(num_queries, num_classes, num_aux=num_aux),
        criterion=criterion,
        num_queries=num_queries,
        metadata=metadata,
        size_divisibility=32,
        pixel_mean=[0.0, 0.0, 0.0],
        pixel_std=[255.0, 255.0, 255.0],
        postprocess=PostprocessOptions(**options),
    )


PUBLISHED_CONFIG = Path(__file__).resolve().parents[1] / "configs/coco/panoptic-segmentation/maskformer2_R50_bs16_50ep.yaml"


def tiny_cfg():
    """The published R50 COCO panoptic config with a 4-stage Swin of width 32, a 1-layer
    deformable encoder, 2 decoder layers, 6 queries and 3 classes (~1.4M parameters)."""
    if not PUBLISHED_CONFIG.exists():
        pytest.skip(f"published config {PUBLISHED_CONFIG.name} not in the checkout")
    cfg = build_config(PUBLISHED_CONFIG)
    cfg.merge_from_list(
        [
            "MODEL.WEIGHTS", "",
            "MODEL.DEVICE", "cpu",
            "DATASETS.TEST", "[]",
            "MODEL.BACKBONE.NAME", "D2SwinTransformer",
            "MODEL.SWIN.EMBED_DIM", 32,
            "MODEL.SWIN.DEPTHS", [1, 1, 1, 1],
            "MODEL.SWIN.NUM_HEADS", [1, 2, 2, 4],
            "MODEL.SWIN.WINDOW_SIZE", 4,
            "MODEL.SWIN.DROP_PATH_RATE", 0.0,
            "MODEL.SEM_SEG_HEAD.NUM_CLASSES", 3,
            "MODEL.SEM_SEG_HEAD.CONVS_DIM", 32,
            "MODEL.SEM_SEG_HEAD.MASK_DIM", 32,
            "MODEL.SEM_SEG_HEAD.TRANSFORMER_ENC_LAYERS", 1,
            "MODEL.MASK_FORMER.HIDDEN_DIM", 32,
            "MODEL.MASK_FORMER.NUM_OBJECT_QUERIES", 6,
            "MODEL.MASK_FORMER.NHEADS", 4,
            "MODEL.MASK_FORMER.DIM_FEEDFORWARD", 64,
            "MODEL.MASK_FORMER.DEC_LAYERS", 3,
            "MODEL.MASK_FORMER.TRAIN_NUM_POINTS", 256,
        ]
    )
    return cfg
