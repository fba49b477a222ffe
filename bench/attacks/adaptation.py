"""Learned adaptation attack (NE paper Table 9): fine-tune each unauthorized model on the
attacker's released data with the true labels, then score it on the released test data.

The paper fine-tunes all parameters for 3 epochs (batch 64, learning rate 5e-4); those are the
defaults. The authorized model is left as it is.

`samples` is how many of the attacker's training images it adapts on (0: all of them, the paper's
50,000 on CIFAR-10). `init = "evaluated"` (default) starts from the evaluated model as it is;
`init = "standard"` starts from the architecture's standard initialisation (NE App. D.5: "trained
from its standard initialization"): every submodule's own `reset_parameters`, seeded. The paper
does not say whether "standard" means the framework's default initialisation (this option) or a
standard pretrained checkpoint, which a suite gets by listing that checkpoint as the evaluated model.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F

from bench.attacks.base import ATTACKS, AdaptationAttack
from bench.attacks.model_attacks import train_module
from bench.errors import UserError

INITS = ("evaluated", "standard")


def standard_init(module, seed: int):
    """`module` with every submodule that has `reset_parameters` re-initialised by it, under `seed`."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for sub in module.modules():
            if hasattr(sub, "reset_parameters") and callable(sub.reset_parameters):
                sub.reset_parameters()
    return module


@ATTACKS.register
class Adapt(AdaptationAttack):
    name = "adapt"
    description = "fine-tune every unauthorized model on (released, label) pairs of the attacker's data (Table 9)"
    defaults = {"samples": 1024, "epochs": 3, "lr": 5e-4, "init": "evaluated"}

    def adapt(self, adapter, view, seed):
        if self.params["init"] not in INITS:
            raise UserError(f"attack 'adapt': unknown init {self.params['init']!r}; valid choices: {', '.join(INITS)}")
        clean = view.clean(self.params["samples"])
        released = view.released_split(clean, 0)  # read (encoded) batch by batch while adapting
        preprocess = adapter.preprocess

        def loss(m, x, y):  # the model's own resize/crop, then its normalization, as at inference
            return F.cross_entropy(m(preprocess(preprocess.geometry(x))), y)

        start = copy.deepcopy(adapter.module)
        if self.params["init"] == "standard":
            start = standard_init(start, seed)
        module = train_module(start, loss, released, clean.labels, self.params["epochs"],
                              self.params["lr"], seed)
        return type(adapter)(adapter.name, module, adapter.preprocess, adapter.arch, adapter.source)
