"""Datasets and dataset mappers; importing this package registers the datasets."""
from . import datasets  # noqa: F401
