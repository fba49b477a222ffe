"""Datasets: each returns a `Split` of images in pixel space [0, 1] and labels."""

from bench.data.base import Split, load_dataset, DATASETS

__all__ = ["Split", "load_dataset", "DATASETS"]
