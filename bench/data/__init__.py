"""Datasets: each returns a lazy `Split` (labels, indices, a reader of images in pixel space [0, 1])."""

from bench.data import classes, digits, ham10000, stl10, synthetic, torchvision_sets, vision  # noqa: F401  (registers the datasets)
from bench.data.base import DATASETS, Batch, Dataset, Split, load_dataset, register_dataset

__all__ = ["Split", "Batch", "Dataset", "load_dataset", "register_dataset", "DATASETS"]
