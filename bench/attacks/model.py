"""Attacks on a released model: what an adversary does to it with some data of their own.

A model attack takes the released module, the model's preprocessing, the attacker's data
(a Split of pixel-space images in [0, 1]) and a seed, and returns the attacked module.
Registered with the same registry as input attacks (`authbench.attacks` entry point or
'module:Class'); `kind = "model"` tells the runner to apply it to the model, not the data.
"""

from __future__ import annotations

import torch.nn as nn

from bench.core.registry import Plugin


class ModelAttack(Plugin):
    """A model attack: transforms the released model."""

    plugin_type = "attack"
    kind = "model"

    def __call__(self, module: nn.Module, preprocess, data, seed: int) -> nn.Module:
        """Return the attacked copy of `module` (never modify the input in place)."""
        raise NotImplementedError
