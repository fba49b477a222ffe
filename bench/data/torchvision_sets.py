"""Image datasets through torchvision, read from a local root (never downloaded at run time).

`dataset = "cifar10" | "cifar100" | "fashion-mnist"` with `root = "data/"`: the folders
torchvision's own loaders expect there (e.g. data/cifar-10-batches-py). Fashion-MNIST is
zero-padded from 28x28 to 32x32, as the CoreLocker recipe trains it.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from bench.data.base import Split, register_dataset
from bench.errors import UserError

SPLITS = ("train", "test")


def _load(cls_name: str, name: str, split: str, root: str | None) -> tuple[torch.Tensor, torch.Tensor]:
    if split not in SPLITS:
        raise UserError(f"unknown {name} split {split!r}; valid choices: {', '.join(SPLITS)}")
    if not root:
        raise UserError(f"dataset {name!r} needs root = \"<folder with the torchvision files>\" in [data]")
    try:
        import torchvision.datasets as tvd
    except ImportError:
        raise UserError(f"dataset {name!r} needs torchvision: pip install 'authbench[vision]'") from None
    try:
        ds = getattr(tvd, cls_name)(root=root, train=split == "train", download=False)
    except RuntimeError as exc:
        raise UserError(f"dataset {name!r} not found under {root!r} ({str(exc).splitlines()[0]}); "
                        f"place torchvision's {cls_name} files there") from None
    images = torch.as_tensor(np.asarray(ds.data)).float() / 255.0
    images = images.unsqueeze(1) if images.ndim == 3 else images.permute(0, 3, 1, 2)
    return images, torch.as_tensor(np.asarray(ds.targets), dtype=torch.long)


def _split(name: str, cls_name: str, classes: int, split: str, root: str | None, pad_to: int = 0) -> Split:
    images, labels = _load(cls_name, name, split, root)
    if pad_to and images.shape[-1] < pad_to:
        pad = (pad_to - images.shape[-1]) // 2
        images = F.pad(images, (pad, pad, pad, pad))
    return Split(f"{name}/{split}", images, labels, np.arange(len(labels)), classes)


@register_dataset("cifar10", "CIFAR-10, 3x32x32, 10 classes: torchvision files under root, an .npz (path) or hub")
def cifar10(split: str, root: str | None = None, path: str | None = None, hub: str | None = None, resize=None,
            crop=None, resample: str = "bilinear", subset: int = 0, subset_seed: int = 0) -> Split:
    """Native 32x32 unless `resize` (bench.data.vision); the seeded subset is taken before resizing."""
    from bench.data.vision import cifar10_arrays, resize_images, subset_positions

    if path or hub:
        images, labels = cifar10_arrays(split, path, hub)
        full = Split(f"cifar10/{split}", images, labels, np.arange(len(labels)), 10)
    else:
        full = _split("cifar10", "CIFAR10", 10, split, root)
    keep = subset_positions(len(full.indices), subset, subset_seed)
    name = full.name if resize is None else f"cifar10@{resize}/{split}"
    images = resize_images(full.images[keep], resize, crop, resample)
    return Split(name, images, full.labels[keep], full.indices[keep], 10)


@register_dataset("cifar100", "CIFAR-100 (torchvision files under root), 3x32x32, 100 classes")
def cifar100(split: str, root: str | None = None) -> Split:
    return _split("cifar100", "CIFAR100", 100, split, root)


@register_dataset("fashion-mnist", "Fashion-MNIST (torchvision files under root), zero-padded to 1x32x32")
def fashion_mnist(split: str, root: str | None = None) -> Split:
    return _split("fashion-mnist", "FashionMNIST", 10, split, root, pad_to=32)
