"""Test-time augmentation (multi-scale + horizontal flip) for all three tasks.

Each image is resized to every `TEST.AUG.MIN_SIZES` (short edge, long edge capped at
`TEST.AUG.MAX_SIZE`), optionally also flipped, and the model runs on every view.

- Semantic: the per-class scores of the views, at the original resolution and flipped
  back, are averaged (the published multi-scale + flip protocol).
- Panoptic and instance (MaskFormer models): a segment comes from a discrete choice among
  queries, so results cannot be averaged; the queries can. Query i of two views need not
  denote the same segment, so each view's queries are first matched one to one to those of
  a reference view (the unflipped view closest to the input's size) by a Hungarian
  assignment that maximises mask overlap plus agreement of the class distributions. The
  matched class probabilities and mask probabilities (at the output size, flipped back)
  are averaged, and the fused queries go through the model's usual panoptic and instance
  inference. This holds the (Q, height, width) mask probabilities of the fused queries
  and of one view in memory.

Models without `predict_queries` get semantic averaging only; their other outputs come from
the un-augmented view. A model tells which results it produces by its `semantic_on`,
`panoptic_on` and `instance_on` attributes (MaskFormer's constructor arguments); one
without them is taken to produce "sem_seg" alone.
"""
from typing import Dict, List

import torch
import torch.nn.functional as F
from detectron2.config import configurable
from detectron2.data.transforms import HFlipTransform
from detectron2.modeling import DatasetMapperTTA
from scipy.optimize import linear_sum_assignment
from torch import nn

__all__ = ["MaskFormerWithTTA", "QueryFusion"]


def _is_flipped(transforms) -> bool:
    return any(isinstance(t, HFlipTransform) for t in transforms.transforms)


def _is_on(model: nn.Module, *tasks: str) -> bool:
    """Whether `model` produces the results of any of `tasks` ("semantic", "panoptic", "instance")."""
    options = getattr(model, "postprocess_options", model)  # MaskFormer keeps them in one object
    return any(getattr(options, f"{task}_on", False) for task in tasks)


class QueryFusion:
    """Running average of the queries of several views of one image, each view's queries
    matched to those of the first view added."""

    def __init__(self, match_size: int = 64):
        """
        Args:
            match_size: masks are compared at match_size x match_size (enough to tell
                segments apart, cheap to multiply).
        """
        self.match_size = match_size
        self.count = 0

    def _small(self, mask_probs):
        size = (self.match_size, self.match_size)
        return F.interpolate(mask_probs[None], size=size, mode="bilinear", align_corners=False)[0].flatten(1)

    def match(self, class_probs, mask_probs) -> torch.Tensor:
        """order (Q,) such that query order[i] of this view is matched to reference query i."""
        small = self._small(mask_probs)
        intersection = self.reference_masks @ small.T
        union = self.reference_masks.sum(1)[:, None] + small.sum(1)[None, :] - intersection
        similarity = intersection / union.clamp(min=1e-6) + self.reference_classes @ class_probs.T
        rows, cols = linear_sum_assignment(similarity.cpu().numpy(), maximize=True)
        order = torch.empty(len(rows), dtype=torch.int64)
        order[torch.as_tensor(rows)] = torch.as_tensor(cols)
        return order.to(class_probs.device)

    def add(self, class_probs, mask_probs) -> None:
        """
        Args:
            class_probs (Tensor): (Q, K+1) softmax class probabilities of one view.
            mask_probs (Tensor): (Q, height, width) sigmoid mask probabilities, at the
                output size and in the original orientation.
        """
        class_probs, mask_probs = class_probs.float(), mask_probs.float()
        if self.count == 0:
            self.reference_classes = class_probs
            self.reference_masks = self._small(mask_probs)
            self.class_sum, self.mask_sum = class_probs.clone(), mask_probs.clone()
        else:
            if class_probs.shape != self.class_sum.shape or mask_probs.shape != self.mask_sum.shape:
                raise ValueError(
                    f"QueryFusion: view with {tuple(class_probs.shape)} classes and {tuple(mask_probs.shape)} "
                    f"masks does not fit the first view's {tuple(self.class_sum.shape)} and "
                    f"{tuple(self.mask_sum.shape)}"
                )
            order = self.match(class_probs, mask_probs)
            self.class_sum += class_probs[order]
            self.mask_sum += mask_probs[order]
        self.count += 1

    def fused_logits(self):
        """(class logits (Q, K+1), mask logits (Q, height, width)) of the averaged queries:
        their softmax / sigmoid give back the averaged probabilities."""
        if self.count == 0:
            raise ValueError("QueryFusion: no view was added")
        class_probs = self.class_sum / self.count
        mask_probs = self.mask_sum / self.count
        return class_probs.clamp(min=1e-12).log(), torch.logit(mask_probs, eps=1e-6)


class MaskFormerWithTTA(nn.Module):
    """Wraps a model that maps `[{"image", "height", "width"}]` to results at the requested
    (height, width): a MaskFormer (all tasks augmented), or any model with a "sem_seg" output."""

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

    def _fuses_queries(self) -> bool:
        return hasattr(self.model, "predict_queries") and _is_on(self.model, "panoptic", "instance")

    @torch.no_grad()
    def _inference_one(self, inputs: Dict) -> Dict:
        views = self.tta_mapper(inputs)
        if self._fuses_queries():
            return self._fused_inference(inputs, views)
        return self._averaged_semantic_inference(inputs, views)

    def _fused_inference(self, inputs: Dict, views: List[Dict]) -> Dict:
        # The first view added is the matching reference: the unflipped one nearest in size.
        input_size = inputs["image"].shape[-2]
        views = sorted(
            views, key=lambda v: (_is_flipped(v["transforms"]), abs(v["image"].shape[-2] - input_size))
        )
        semantic = _Average()
        fusion = QueryFusion()
        for view in views:
            flipped = _is_flipped(view.pop("transforms"))
            prediction = self.model.predict_queries([view])[0]
            mask_logits = prediction.masks(slice(None))  # (Q, height, width)
            if _is_on(self.model, "semantic"):
                scores = self.model.semantic_scores(prediction, mask_logits)
                semantic.add(scores.flip(dims=[2]) if flipped else scores)
            masks = mask_logits.sigmoid_()
            fusion.add(prediction.class_logits.softmax(-1), masks.flip(dims=[2]) if flipped else masks)
        result = self.model.postprocess_upsampled(*fusion.fused_logits())
        if semantic.count:
            result["sem_seg"] = semantic.mean()
        return result

    def _averaged_semantic_inference(self, inputs: Dict, views: List[Dict]) -> Dict:
        semantic, plain_view_output = _Average(), None
        for view in views:
            flipped = _is_flipped(view.pop("transforms"))
            output = self.model([view])[0]
            scores = output.pop("sem_seg")
            semantic.add(scores.flip(dims=[2]) if flipped else scores)
            if not flipped and view["image"].shape == inputs["image"].shape:
                plain_view_output = output
        result = {"sem_seg": semantic.mean()}
        if plain_view_output is None and _is_on(self.model, "panoptic", "instance"):
            plain_view_output = self.model([inputs])[0]
            plain_view_output.pop("sem_seg", None)
        if plain_view_output:
            result.update(plain_view_output)
        return result


class _Average:
    """Float32 running mean of equally shaped tensors."""

    def __init__(self):
        self.total, self.count = None, 0

    def add(self, x):
        self.total = x.float() if self.total is None else self.total + x.float()
        self.count += 1

    def mean(self):
        return self.total / self.count
