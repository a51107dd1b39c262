"""Evaluators: ``build_evaluator`` picks them from a dataset's ``evaluator_type``."""
from .build import build_dataset_evaluator, build_evaluator, detectron2_ops_built
from .instance_evaluation import InstanceSegEvaluator, ValidatedCOCOEvaluator
from .panoptic_evaluation import PanopticEvaluator
from .sem_seg_evaluation import SemSegEvaluator

__all__ = [
    "build_evaluator",
    "build_dataset_evaluator",
    "detectron2_ops_built",
    "InstanceSegEvaluator",
    "ValidatedCOCOEvaluator",
    "PanopticEvaluator",
    "SemSegEvaluator",
]
