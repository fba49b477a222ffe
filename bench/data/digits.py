"""scikit-learn's handwritten digits, upsampled, with a fixed stratified split.

The 8x8 originals are bilinearly upsampled so that the first layers of the zoo
models see a realistic input dimension (1x32x32 = 1024) with a real insensitive
subspace; values are scaled to [0, 1]. Tiny (1797 images): the arrays are built once per process
and each split is an in-memory tensor.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from bench.data.base import Split, register_dataset
from bench.core.errors import UserError

RESOLUTION = 32
SPLIT_SEED = 0
TEST_FRACTION = 0.3
SPLITS = ("train", "test")


@lru_cache(maxsize=4)
def _upsampled(resolution: int) -> tuple[torch.Tensor, torch.Tensor]:
    bunch = load_digits()
    x = torch.tensor(bunch.images, dtype=torch.float32).unsqueeze(1) / 16.0
    x = F.interpolate(x, size=(resolution, resolution), mode="bilinear", align_corners=False)
    return x.clamp(0.0, 1.0), torch.tensor(bunch.target, dtype=torch.long)


@lru_cache(maxsize=1)
def _split_indices() -> tuple[np.ndarray, np.ndarray]:
    labels = load_digits().target
    idx = np.arange(len(labels))
    train, test = train_test_split(idx, test_size=TEST_FRACTION, stratify=labels, random_state=SPLIT_SEED)
    return np.sort(train), np.sort(test)


def split_indices() -> dict[str, np.ndarray]:
    """The fixed stratified train/test split (seed 0, 30% test); computed once per process."""
    train, test = _split_indices()
    return {"train": train.copy(), "test": test.copy()}


@register_dataset("digits", "scikit-learn handwritten digits, 10 classes, 1x32x32, fixed stratified 70/30 split")
def load_digits_split(split: str, resolution: int = RESOLUTION) -> Split:
    if split not in SPLITS:
        raise UserError(f"unknown digits split {split!r}; valid choices: {', '.join(SPLITS)}")
    images, labels = _upsampled(resolution)
    idx = split_indices()[split]
    name = "digits" if resolution == RESOLUTION else f"digits{resolution}"
    return Split(f"{name}/{split}", images[idx], labels[idx], idx, 10)
