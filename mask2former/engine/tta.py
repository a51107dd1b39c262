"""Test-time augmentation (multi-scale + horizontal flip) for semantic segmentation.

Each image is resized to every `TEST.AUG.MIN_SIZES` (short edge, long edge capped at
`TEST.AUG.MAX_SIZE`), optionally also flipped; the model returns per-class scores at the
original resolution for each version, flipped ones are flipped back, and the scores are
averaged.

Panoptic and instance outputs are *not* augmented. Their segments come from a discrete
choice among queries (argmax class, thresholds, overlap tests), and a query does not
denote the same segment in two augmented views, so there is nothing to average per query;
fusing segments across views needs a matching heuristic that has no published reference.
When the model also produces them, they are taken from the un-augmented view (the input
image at its test size), so panoptic/instance evaluation still works unchanged.
"""
from typing import Dict, List

import torch
from detectron2.config import configurable
from detectron2.data.transforms import HFlipTransform
from detectron2.modeling import DatasetMapperTTA
from torch import nn

__all__ = ["SemanticSegmentorWithTTA"]


def _is_flipped(transforms) -> bool:
    return any(isinstance(t, HFlipTransform) for t in transforms.transforms)


class SemanticSegmentorWithTTA(nn.Module):
    """Wraps a model that maps `[{"image", "height", "width"}]` to `[{"sem_seg": (K,H,W)}]`
    (H, W = the requested height/width)."""

    @configurable
    def __init__(self, model: nn.Module, *, min_sizes: List[int], max_size: int, flip: bool):
        super().__init__()
        if isinstance(model, nn.parallel.DistributedDataParallel):
            model = model.module
        if not min_sizes:
            raise ValueError("TEST.AUG.MIN_SIZES must list at least one size")
        self.model = model
        self.tta_mapper = DatasetMapperTTA(min_sizes=list(min_sizes), max_size=max_size, flip=flip)

    @classmethod
    def from_config(cls, cfg, model):
        return {
            "model": model,
            "min_sizes": cfg.TEST.AUG.MIN_SIZES,
            "max_size": cfg.TEST.AUG.MAX_SIZE,
            "flip": cfg.TEST.AUG.FLIP,
        }

    def forward(self, batched_inputs: List[Dict]) -> List[Dict]:
        return [self._inference_one(self._with_original_size(x)) for x in batched_inputs]

    @staticmethod
    def _with_original_size(inputs: Dict) -> Dict:
        inputs = dict(inputs)
        if "height" not in inputs or "width" not in inputs:
            inputs["height"], inputs["width"] = inputs["image"].shape[-2:]
        return inputs

    @torch.no_grad()
    def _inference_one(self, inputs: Dict) -> Dict:
        summed, count, plain_view_output = None, 0, None
        for view in self.tta_mapper(inputs):
            transforms = view.pop("transforms")
            output = self.model([view])[0]
            scores = output.pop("sem_seg")
            if _is_flipped(transforms):
                scores = scores.flip(dims=[2])
            elif view["image"].shape == inputs["image"].shape:
                plain_view_output = output
            summed = scores.float() if summed is None else summed + scores.float()
            count += 1
        result = {"sem_seg": summed / count}
        if plain_view_output is None and self._has_other_tasks():
            plain_view_output = self.model([inputs])[0]
            plain_view_output.pop("sem_seg", None)
        if plain_view_output:
            result.update(plain_view_output)
        return result

    def _has_other_tasks(self) -> bool:
        return bool(getattr(self.model, "panoptic_on", False) or getattr(self.model, "instance_on", False))
