"""Small CIFAR-sized networks for CPU suites on real data: students of extraction suspects and independently
trained negatives (`torch:bench.recipes.small_cifar:cnn`), called with num_classes and in_chans like every
`torch:` family of bench.fingerprint.training.build_arch. Shapes only; no weights ship with them."""

from __future__ import annotations

import torch.nn as nn


def cnn(num_classes: int = 10, in_chans: int = 3, width: int = 8, hidden: int = 128) -> nn.Module:
    """Four 3x3 convolutions (width, width, 2 width, 2 width; ReLU, max-pool after each pair) and two linear
    layers (`hidden` units) for 32x32 inputs: 0.14 M parameters and about 2.5 M multiply-adds an image at
    width 8 (sized for CPU training on a shared core)."""
    w = int(width)
    return nn.Sequential(
        nn.Conv2d(in_chans, w, 3, padding=1), nn.ReLU(), nn.Conv2d(w, w, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(w, 2 * w, 3, padding=1), nn.ReLU(), nn.Conv2d(2 * w, 2 * w, 3, padding=1), nn.ReLU(),
        nn.MaxPool2d(2), nn.Flatten(), nn.Linear(2 * w * 8 * 8, hidden), nn.ReLU(), nn.Linear(hidden, num_classes))


def mlp(num_classes: int = 10, in_chans: int = 3, hidden: int = 256) -> nn.Module:
    """Two hidden layers of `hidden` units on the flattened 32x32 image."""
    return nn.Sequential(nn.Flatten(), nn.Linear(in_chans * 32 * 32, hidden), nn.ReLU(), nn.Linear(hidden, hidden),
                         nn.ReLU(), nn.Linear(hidden, num_classes))
