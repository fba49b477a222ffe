"""Deterministic synthetic images, for memory/speed benchmarks and GPU checks (no files, no network).

    [data]
    dataset = "synthetic"
    n = 1024          # images per split
    size = 224        # or [h, w]
    channels = 3
    classes = 10
    seed = 0

Image and label of dataset index i are functions of (seed, i) only: reading one position
generates that image alone. The label is a hash of (seed, i); the image is a smooth separable
pattern, a class part (seeded by (seed, label), so the task is learnable) plus a part of its own
(seeded by (seed, i)), float32 in [0, 1], bit-identical on every machine and thread count
(elementwise ops only). "train" holds indices 0..n-1, "test" TEST_OFFSET..TEST_OFFSET+n-1:
disjoint for every n.
"""

from __future__ import annotations

import numpy as np
import torch

from bench.data.base import Split, register_dataset
from bench.core.errors import UserError

SPLITS = ("train", "test")
TEST_OFFSET = 1 << 32
GRID = 16  # knots of each random profile
_SALT_LABEL, _SALT_IMAGE, _SALT_CLASS = 0x6C61626C, 0x696D6167, 0x636C6173


def _splitmix(x: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        z = x.astype(np.uint64) + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def _hash(seed: int, values, salt: int) -> np.ndarray:
    """uint64 hashes of (seed, salt, value) for an array of values."""
    head = _splitmix(np.array([(seed * 0x100000001 + salt) & 0xFFFFFFFFFFFFFFFF], dtype=np.uint64))
    return _splitmix(head ^ np.atleast_1d(np.asarray(values, dtype=np.int64)).astype(np.uint64))


def labels_of(seed: int, indices, classes: int) -> np.ndarray:
    """The labels of these dataset indices (int64 in range(classes))."""
    return (_hash(seed, indices, _SALT_LABEL) % np.uint64(classes)).astype(np.int64)


def _upsample_weights(n_in: int, n_out: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Linear (half-pixel) source knots and weights, computed in float64 and rounded once."""
    pos = np.clip((np.arange(n_out) + 0.5) * n_in / n_out - 0.5, 0.0, n_in - 1)
    lo = np.floor(pos).astype(np.int64)
    hi = np.minimum(lo + 1, n_in - 1)
    return torch.as_tensor(lo), torch.as_tensor(hi), torch.as_tensor((pos - lo).astype(np.float32))


def _profiles(knots: torch.Tensor, n: int) -> torch.Tensor:
    """(..., GRID) random knots -> (..., n) piecewise-linear profiles, with elementwise ops only (F.interpolate's
    CPU result depends on the thread count; this does not, so an image is the same on every machine)."""
    lo, hi, weight = _upsample_weights(knots.shape[-1], n)
    return knots[..., lo] * (1 - weight) + knots[..., hi] * weight


def _generator(seed: int, value: int, salt: int) -> torch.Generator:
    return torch.Generator().manual_seed(int(_hash(seed, [value], salt)[0]))


def images_of(seed: int, indices, classes: int, shape: tuple[int, int, int]) -> torch.Tensor:
    """The images of these dataset indices: float32 (n, C, H, W) in [0, 1], each a function of (seed, index) alone:
    per channel 0.2 (u0(y) + v0(x)) + 0.3 u1 v1 + 0.3 (1 - (1 - u2)(1 - v2)) of smooth random profiles u, v in [0, 1]
    (u0, v0 the class's): mean 0.5."""
    c, h, w = shape
    indices = np.atleast_1d(np.asarray(indices, dtype=np.int64))
    labels = labels_of(seed, indices, classes)
    out = torch.empty((len(indices), c, h, w))
    for k, (index, label) in enumerate(zip(indices.tolist(), labels.tolist())):
        own = torch.rand((4, c, GRID), generator=_generator(seed, index, _SALT_IMAGE))
        cls = torch.rand((2, c, GRID), generator=_generator(seed, label, _SALT_CLASS))
        u = _profiles(torch.stack([cls[0], own[0], own[1]]), h)[..., :, None]  # (3, c, h, 1)
        v = _profiles(torch.stack([cls[1], own[2], own[3]]), w)[..., None, :]  # (3, c, 1, w)
        img = torch.add(u[0], v[0], out=out[k]).mul_(0.2)
        img += (u[1] * v[1]).mul_(0.3)
        img += ((1 - u[2]) * (1 - v[2])).neg_().add_(1.0).mul_(0.3)
    return out.clamp_(0.0, 1.0)


class SyntheticReader:
    """Generates the images of positions p (dataset index offset + p) on demand; holds only the options."""

    def __init__(self, seed: int, offset: int, classes: int, shape: tuple[int, int, int]):
        self.seed, self.offset, self.classes, self.shape = int(seed), int(offset), int(classes), tuple(shape)

    def __call__(self, positions: np.ndarray) -> torch.Tensor:
        return images_of(self.seed, self.offset + np.asarray(positions, dtype=np.int64), self.classes, self.shape)


def _count(value, key: str, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise UserError(f"synthetic: [data] {key} must be an int >= {low}, got {value!r}")
    return int(value)


@register_dataset("synthetic", "deterministic synthetic images (options n, size, channels, classes, seed), "
                               "for memory/speed benchmarks and GPU checks")
def synthetic(split: str = "train", n: int = 1024, size=224, channels: int = 3, classes: int = 10,
              seed: int = 0) -> Split:
    if split not in SPLITS:
        raise UserError(f"unknown synthetic split {split!r}; valid choices: {', '.join(SPLITS)}")
    n, c, classes, seed = _count(n, "n", 1), _count(channels, "channels", 1), _count(classes, "classes", 1), \
        _count(seed, "seed", 0)
    if isinstance(size, (int, np.integer)) and not isinstance(size, bool) and size > 0:
        h = w = int(size)
    elif (isinstance(size, (list, tuple)) and len(size) == 2
          and all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v > 0 for v in size)):
        h, w = int(size[0]), int(size[1])
    else:
        raise UserError(f"synthetic: [data] size must be a positive int or [h, w], got {size!r}")
    offset = 0 if split == "train" else TEST_OFFSET
    indices = offset + np.arange(n, dtype=np.int64)
    labels = torch.as_tensor(labels_of(seed, indices, classes))
    name = f"synthetic-{n}x{c}x{h}x{w}-c{classes}-s{seed}/{split}"
    return Split(name, None, labels, indices, classes, reader=SyntheticReader(seed, offset, classes, (c, h, w)))
