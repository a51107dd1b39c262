"""Post-processing results as detectron2 structures.

The computation lives in `mask2former.postprocessing` (plain torch, shared with the
exported-model runner); this module only wraps its results the way detectron2's models
return them and reads the thing classes from dataset metadata. The core's names are
re-exported so that model code has one place to import post-processing from.
"""
from typing import Dict, FrozenSet, Optional

from detectron2.structures import Boxes, Instances

from ..postprocessing import (  # noqa: F401 (re-exported)
    InstancePredictions,
    PostprocessOptions,
    QueryMaskUpsampler,
    QueryPredictions,
    banded_semantic_inference,
    instance_inference,
    mask_bounding_boxes,
    panoptic_inference,
    postprocess_all_queries,
    postprocess_image,
    results_from_upsampled_masks,
    select_instance_queries,
    select_panoptic_queries,
    semantic_inference,
)

__all__ = ["to_instances", "as_detectron2_results", "thing_classes_of"]


def to_instances(predictions: InstancePredictions) -> Instances:
    """detectron2 `Instances` with pred_masks, pred_boxes, scores and pred_classes."""
    result = Instances(tuple(predictions.image_size))
    result.pred_masks = predictions.masks
    result.pred_boxes = Boxes(predictions.boxes)
    result.scores = predictions.scores
    result.pred_classes = predictions.classes
    return result


def as_detectron2_results(result: Dict) -> Dict:
    """A post-processing result dict with its "instances" (if any) as `Instances`."""
    if "instances" in result:
        result = dict(result, instances=to_instances(result["instances"]))
    return result


def thing_classes_of(metadata) -> Optional[FrozenSet[int]]:
    """Contiguous ids of thing classes, or None if the metadata does not say."""
    mapping = getattr(metadata, "thing_dataset_id_to_contiguous_id", None)
    if mapping is None:
        return None
    return frozenset(int(v) for v in mapping.values())
