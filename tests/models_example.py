"""Torch factories and a checkpoint loader for tests (model specs name them as 'models_example:...')."""

import json

import torch
import torch.nn as nn


def tiny_cnn(classes: int = 10) -> nn.Module:
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(4), nn.Flatten(),
                         nn.Linear(64, classes))


def bn_cnn(classes: int = 10) -> nn.Module:
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.AdaptiveAvgPool2d(2),
                         nn.Flatten(), nn.Linear(16, classes))


def json_weights(path: str) -> dict:
    """A loader for a format the harness does not know: {name: nested lists} in a JSON file."""
    return {k: torch.tensor(v) for k, v in json.loads(open(path).read()).items()}


def rgb_cnn(classes: int = 10) -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(4), nn.Flatten(),
                         nn.Linear(64, classes))


def broken(classes: int = 10) -> nn.Module:
    """A factory that fails as a user's can (a missing weights server, a bug)."""
    raise RuntimeError("weights server unreachable")
