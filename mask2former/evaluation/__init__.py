"""Evaluators: ``build_evaluator`` picks them from a dataset's ``evaluator_type``."""
from .boundary_iou import BoundaryAPEvaluator, boundary_iou, evaluate_boundary_ap, mask_boundary
from .build import build_dataset_evaluator, build_evaluator, detectron2_ops_built
from .instance_evaluation import InstanceSegEvaluator, ValidatedCOCOEvaluator
from .panoptic_evaluation import PanopticEvaluator
from .sem_seg_evaluation import SemSegEvaluator
from .semantic_pq import SemanticPQEvaluator, semantic_pq, semantic_results_json_loader

__all__ = [
    "boundary_iou",
    "build_evaluator",
    "build_dataset_evaluator",
    "detectron2_ops_built",
    "evaluate_boundary_ap",
    "mask_boundary",
    "semantic_pq",
    "semantic_results_json_loader",
    "BoundaryAPEvaluator",
    "InstanceSegEvaluator",
    "ValidatedCOCOEvaluator",
    "PanopticEvaluator",
    "SemSegEvaluator",
    "SemanticPQEvaluator",
]
