"""A torch factory for tests: a tiny 1-channel CNN (torch-source model specs name it as 'models_example:tiny_cnn')."""

import torch.nn as nn


def tiny_cnn(classes: int = 10) -> nn.Module:
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(4), nn.Flatten(),
                         nn.Linear(64, classes))
