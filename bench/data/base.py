"""Dataset registry and the `Split` container with a stable identity."""

from __future__ import annotations

import hashlib
import inspect
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from bench.errors import UserError, unknown


@dataclass(frozen=True)
class Split:
    """Images (N, C, H, W) in [0, 1], integer labels, and what identifies them."""

    name: str
    images: torch.Tensor
    labels: torch.Tensor
    indices: np.ndarray
    num_classes: int

    @property
    def identity(self) -> dict:
        """Dataset + split + a digest of the exact indices, for cache keys."""
        digest = hashlib.sha256(np.ascontiguousarray(self.indices, dtype=np.int64).tobytes()).hexdigest()[:16]
        return {"dataset": self.name, "n": int(len(self.indices)), "indices": digest}

    def subset(self, n: int, seed: int) -> "Split":
        """A seeded random subset of n samples (all of them when n <= 0 or n >= N)."""
        if n <= 0 or n >= len(self.indices):
            return self
        order = np.sort(np.random.default_rng(seed).choice(len(self.indices), size=n, replace=False))
        return Split(self.name, self.images[order], self.labels[order], self.indices[order], self.num_classes)


DATASETS: dict[str, tuple[str, Callable[..., Split]]] = {}


def register_dataset(name: str, description: str):
    def wrap(fn):
        DATASETS[name] = (description, fn)
        return fn

    return wrap


def load_dataset(name: str, split: str, subset: int = 0, subset_seed: int = 0, **options) -> Split:
    """Load a registered dataset split by name, optionally a seeded subset of it. Loaders that take
    `subset` decode only those samples; the result is the same Split as loading all and subsetting."""
    if name not in DATASETS:
        raise unknown("dataset", name, DATASETS)
    loader = DATASETS[name][1]
    accepted = [p for p in inspect.signature(loader).parameters if p != "split"]
    bad = sorted(set(options) - set(accepted))
    if bad:
        raise UserError(f"dataset {name!r} has no option {bad[0]!r}; valid [data] options: "
                        f"{', '.join(accepted) or '(none)'}")
    if subset > 0 and "subset" in accepted:
        return loader(split, subset=subset, subset_seed=subset_seed, **options)
    return loader(split, **options).subset(subset, subset_seed)
