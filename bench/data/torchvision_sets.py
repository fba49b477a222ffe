"""Image datasets through torchvision, read from a local root (never downloaded at run time).

`dataset = "cifar10" | "cifar100" | "fashion-mnist"` with `root = "data/"`: the folders
torchvision's own loaders expect there (e.g. data/cifar-10-batches-py). Fashion-MNIST is
zero-padded from 28x28 to 32x32, as the CoreLocker recipe trains it.

Lazy: the uint8 array stays in memory as stored (50k x 3 KB for CIFAR); each read converts only
its rows to float32 (and pads or resizes them).
"""

from __future__ import annotations

import numpy as np
import torch

from bench.data.base import Split, array_digest, check_labels, register_dataset
from bench.data.vision import ArrayReader, cifar10_reader, resolution_tag, subset_positions, torchvision_set
from bench.core.errors import UserError, install_hint

SPLITS = ("train", "test")
# CIFAR-10's class names in label order (batches.meta's label_names), declared on its splits (Split.class_names)
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


def _reader(cls_name: str, name: str, split: str, root: str | None, classes: int, pad_to: int = 0, resize=None,
            crop=None, resample: str = "bilinear"):
    """(ArrayReader over torchvision's uint8 array, labels) for one split."""

    if split not in SPLITS:
        raise UserError(f"unknown {name} split {split!r}; valid choices: {', '.join(SPLITS)}")
    if not root:
        raise UserError(f"dataset {name!r} needs root = \"<folder with the torchvision files>\" in [data]")
    try:
        import torchvision.datasets  # noqa: F401
    except ImportError:
        raise UserError(f"dataset {name!r} needs torchvision: {install_hint('vision')}") from None
    try:
        ds = torchvision_set(cls_name, str(root), split == "train")
    except RuntimeError as exc:
        raise UserError(f"dataset {name!r} not found under {root!r} ({str(exc).splitlines()[0]}); "
                        f"place torchvision's {cls_name} files there"
                        + (" (python -m bench.data.archives fetch cifar10 --root DIR downloads, verifies and unpacks "
                           "the pinned archive)" if cls_name == "CIFAR10" else "")) from None
    array = np.asarray(ds.data)
    labels = torch.as_tensor(np.asarray(ds.targets), dtype=torch.long)
    check_labels(labels, classes, f"{name}/{split} under {root!r}")
    layout = "nhw" if array.ndim == 3 else "nhwc"
    width = array.shape[-1] if layout == "nhw" else array.shape[-2]
    pad = (pad_to - width) // 2 if pad_to and width < pad_to else 0
    reader = ArrayReader(("torchvision", cls_name, str(root), split == "train"), layout, True, pad, resize, crop,
                         resample, array=array)
    reader.content = array_digest(array, labels.numpy())
    return reader, labels


def _split(name: str, cls_name: str, classes: int, split: str, root: str | None, pad_to: int = 0) -> Split:
    reader, labels = _reader(cls_name, name, split, root, classes, pad_to)
    return Split(f"{name}/{split}", None, labels, np.arange(len(labels)), classes, reader=reader, content=reader.content)


@register_dataset("cifar10", "CIFAR-10, 3x32x32, 10 classes: torchvision files under root, an .npz (path) or hub")
def cifar10(split: str, root: str | None = None, path: str | None = None, hub: str | None = None, resize=None,
            crop=None, resample: str = "bilinear", subset: int = 0, subset_seed: int = 0) -> Split:
    """Native 32x32 unless `resize` (bench.data.vision); the seeded subset is taken before resizing."""

    if resize is not None:
        resolution_tag(resize, crop)  # a bad resize / crop fails here, not at the first read
    if path or hub:
        reader, labels = cifar10_reader(split, path, hub, resize, crop, resample)
    else:
        reader, labels = _reader("CIFAR10", "cifar10", split, root, 10, 0, resize, crop, resample)
    name = f"cifar10/{split}" if resize is None else f"cifar10@{resize}/{split}"
    full = Split(name, None, labels, np.arange(len(labels)), 10, reader=reader, content=reader.content)
    full.class_names = CIFAR10_CLASSES
    keep = subset_positions(len(full), subset, subset_seed)
    return full if len(keep) == len(full) else full.take(keep)


@register_dataset("cifar100", "CIFAR-100 (torchvision files under root), 3x32x32, 100 classes")
def cifar100(split: str, root: str | None = None) -> Split:
    return _split("cifar100", "CIFAR100", 100, split, root)


@register_dataset("fashion-mnist", "Fashion-MNIST (torchvision files under root), zero-padded to 1x32x32")
def fashion_mnist(split: str, root: str | None = None) -> Split:
    return _split("fashion-mnist", "FashionMNIST", 10, split, root, pad_to=32)


@register_dataset("mnist", "MNIST (torchvision files under root), 1x28x28 (784 inputs, as CoreLocker's Figure 5 FCNs)")
def mnist(split: str, root: str | None = None) -> Split:
    return _split("mnist", "MNIST", 10, split, root)
