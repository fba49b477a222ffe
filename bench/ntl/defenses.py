"""The defenses of the non-transferable-learning family (the `domain` protocol, bench.protocols.domain).

A `DomainDefense` trains a fresh network of one architecture on the authorized (source) domain, seeing the
unauthorized (target) domains' training images as its method requires, and returns the trained module; the
protocol scores it on every domain's test images and under the standard attacks (bench.ntl.attacks).

- `plain`: ordinary training on the source domain only (the reference every NTL method is compared with);
- `ntl`: Non-Transferable Learning, target-specified (bench.ntl.methods.train_ntl; the public code's objective).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from bench.defenses.base import DEFENSES, Defense
from bench.ntl.methods import train_ntl

PROTOCOL = "domain"


@dataclass(frozen=True, kw_only=True)
class DomainData:
    """Images of one domain (pixel space [0, 1], N x C x H x W) with their labels."""

    images: torch.Tensor
    labels: torch.Tensor


class DomainDefense(Defense):
    """Trains a network that keeps the source domain; `train(module, source, target, seed)` returns it trained.
    `module` is a fresh network (the protocol builds it from the entry's architecture), `preprocess` maps
    pixels to its input; `target` holds the unauthorized domains' training images (and their labels, which a
    target-specified method reads)."""

    protocol = PROTOCOL
    trains = True
    defaults = {"epochs": 10, "lr": 1e-3, "batch": 64}
    param_schema = {"epochs": {"type": "integer", "minimum": 1}, "lr": {"type": "number", "exclusiveMinimum": 0},
                    "batch": {"type": "integer", "minimum": 1}}

    def train(self, module: nn.Module, preprocess, source: DomainData, target: DomainData, num_classes: int,
              seed: int) -> nn.Module:
        raise NotImplementedError


def train_plain(module: nn.Module, preprocess, x: torch.Tensor, y: torch.Tensor, *, epochs: int, lr: float,
                seed: int, batch: int = 64) -> nn.Module:
    """Cross-entropy, Adam, seeded mini-batches (the same loop as train_ntl without the target term)."""
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    opt = torch.optim.Adam(module.parameters(), lr=lr)
    module.train()
    for _ in range(int(epochs)):
        order = torch.randperm(len(y), generator=gen)
        for i in range(0, len(y), batch):
            idx = order[i : i + batch]
            loss = F.cross_entropy(module(preprocess(x[idx])), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return module.eval()


@DEFENSES.register
class Plain(DomainDefense):
    name = "plain"
    description = "ordinary training on the source domain only (the reference of the non-transferable-learning board)"

    def train(self, module, preprocess, source, target, num_classes, seed):
        p = self.params
        return train_plain(module, preprocess, source.images, source.labels, epochs=int(p["epochs"]), lr=float(p["lr"]),
                           seed=seed, batch=int(p["batch"]))


@DEFENSES.register
class NTL(DomainDefense):
    name = "ntl"
    description = ("Non-Transferable Learning, target-specified (Wang, Xu, Xu, Wang & Zhu, ICLR 2022): source KL minus "
                   "the clipped target KL times the clipped feature MMD (the public code's objective)")
    paper = {"authors": "Lixu Wang, Shichao Xu, Ruiqi Xu, Xiao Wang, Qi Zhu",
             "title": "Non-Transferable Learning: A New Approach for Model Ownership Verification and Applicability "
                      "Authorization", "venue": "ICLR 2022", "link": "https://github.com/conditionWang/NTL"}
    defaults = {**DomainDefense.defaults, "alpha": 0.1, "beta": 0.1}
    param_schema = {**DomainDefense.param_schema, "alpha": {"type": "number", "minimum": 0},
                    "beta": {"type": "number", "minimum": 0}}

    def train(self, module, preprocess, source, target, num_classes, seed):
        p = self.params
        return train_ntl(module, preprocess, source.images, source.labels, target.images, target.labels, num_classes,
                         epochs=int(p["epochs"]), lr=float(p["lr"]), seed=seed, alpha=float(p["alpha"]),
                         beta=float(p["beta"]), batch=int(p["batch"]))
