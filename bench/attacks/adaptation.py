"""Learned adaptation attack (NE paper Table 9): fine-tune each unauthorized model on the
attacker's released data with the true labels, then score it on the released test data.

The paper fine-tunes all parameters for 3 epochs (batch 64, learning rate 5e-4); those are the
defaults. The authorized model is left as it is.
"""

from __future__ import annotations

import copy

import torch.nn.functional as F

from bench.attacks.base import AdaptationAttack
from bench.attacks.model_attacks import train_module


class Adapt(AdaptationAttack):
    name = "adapt"
    description = "fine-tune every unauthorized model on (released, label) pairs of the attacker's data (Table 9)"
    defaults = {"samples": 1024, "epochs": 3, "lr": 5e-4}

    def adapt(self, adapter, view, seed):
        clean = view.clean(self.params["samples"])
        released = view.released_split(clean, 0)  # read (encoded) batch by batch while adapting
        preprocess = adapter.preprocess

        def loss(m, x, y):  # the model's own resize/crop, then its normalization, as at inference
            return F.cross_entropy(m(preprocess(preprocess.geometry(x))), y)

        module = train_module(copy.deepcopy(adapter.module), loss, released, clean.labels, self.params["epochs"],
                              self.params["lr"], seed)
        return type(adapter)(adapter.name, module, adapter.preprocess, adapter.arch, adapter.source)
