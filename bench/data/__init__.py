"""Datasets: each returns a `Split` of images in pixel space [0, 1] and labels."""

from bench.data import digits, torchvision_sets, vision  # noqa: F401  (registers the datasets)
from bench.data.base import DATASETS, Split, load_dataset

__all__ = ["Split", "load_dataset", "DATASETS"]
