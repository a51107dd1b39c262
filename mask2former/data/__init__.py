"""Datasets and dataset mappers; importing this package registers the datasets."""
