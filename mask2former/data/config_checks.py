"""Checks of a config against the datasets it names, run before a model is built.

A class count that differs from the dataset's shows up late and far from its cause (an
IndexError in the matcher at iteration 0, or a shape error in the final evaluation after
a whole training run); here it is an error naming the dataset, its class count and the key.
"""
from typing import Sequence

from detectron2.data import DatasetCatalog, MetadataCatalog

from ..utils.errors import UserInputError
from .datasets import check_datasets_file

__all__ = ["dataset_num_classes", "check_config_against_datasets"]

# Evaluators of instance datasets, whose model predicts only the thing classes.
_INSTANCE_EVALUATORS = ("coco", "ade20k_instance", "lvis")


def dataset_num_classes(dataset_name: str) -> int:
    """The class count a model trained or evaluated on `dataset_name` must predict: its
    thing classes for instance datasets, all (stuff) classes for semantic and panoptic
    ones (detectron2's panoptic metadata lists every class in `stuff_classes`); 0 if the
    metadata lists none."""
    metadata = MetadataCatalog.get(dataset_name)
    things = metadata.get("thing_classes", None) or []
    stuff = metadata.get("stuff_classes", None) or []
    if metadata.get("evaluator_type", None) in _INSTANCE_EVALUATORS or not stuff:
        return len(things)
    return len(stuff)


def check_config_against_datasets(cfg, dataset_names: Sequence[str], key: str) -> None:
    """Raise `UserInputError` if a dataset of `dataset_names` (the config's `key`, e.g.
    "DATASETS.TRAIN") is not registered or has another class count than
    MODEL.SEM_SEG_HEAD.NUM_CLASSES."""
    check_datasets_file()
    num_classes = cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES
    registered = set(DatasetCatalog.list())
    for name in dataset_names:
        if name not in registered:
            raise UserInputError(
                f"{key}: dataset '{name}' is not registered (see datasets/README.md; custom "
                "datasets can be listed in a MASK2FORMER_DATASETS file)"
            )
        expected = dataset_num_classes(name)
        if expected and expected != num_classes:
            raise UserInputError(
                f"MODEL.SEM_SEG_HEAD.NUM_CLASSES is {num_classes} but dataset '{name}' ({key}) "
                f"has {expected} classes: set MODEL.SEM_SEG_HEAD.NUM_CLASSES {expected}"
            )
