"""Datasets and dataset mappers; importing this package registers the datasets."""

from . import datasets  # noqa: F401
from .dataset_mappers import build_dataset_mapper  # noqa: F401

__all__ = ["build_dataset_mapper"]
