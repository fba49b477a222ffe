"""The standard attacks of the `domain` protocol (NTLBench's attack families, small): what an attacker who
holds the released model does to read an unauthorized domain. Each returns an adapted copy (never the
released module itself).

- `target-ft`: fine-tuning of every layer with a few labelled target samples (`fraction` of each target
  domain's training images, the same seeded positions for every target), cross-entropy, Adam;
- `source-ft`: FTAL on the source domain: every layer fine-tuned on `fraction` of the labelled source images;
- `shot`: source-free domain adaptation, SHOT-IM (Liang, Hu & Feng, "Do We Really Need to Access the Source
  Data? Source Hypothesis Transfer for Unsupervised Domain Adaptation", ICML 2020): the classifier (last
  Linear layer) frozen, the feature extractor trained on unlabelled target images by information
  maximisation (mean entropy of the predictions minus the entropy of their mean). SHOT's self-supervised
  pseudo-labelling step is not included (the paper's "SHOT-IM" ablation).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from bench.core.errors import UserError


@dataclass(frozen=True)
class DomainAttack:
    name: str
    description: str
    defaults: dict


ATTACKS = {
    "none": DomainAttack("none", "the released model as is", {}),
    "target-ft": DomainAttack("target-ft", "fine-tuning on a few labelled target-domain samples (all layers)",
                              {"fraction": 0.05, "epochs": 2, "lr": 1e-3}),
    "source-ft": DomainAttack("source-ft", "FTAL: all layers fine-tuned on labelled source-domain samples",
                              {"fraction": 0.1, "epochs": 2, "lr": 1e-3}),
    "shot": DomainAttack("shot", "SHOT-IM source-free adaptation: information maximisation on unlabelled target images",
                         {"epochs": 2, "lr": 1e-3}),
}


def parse(entry) -> tuple[str, dict]:
    """An attack entry ('name' or {name = ..., params}) as (name, full params); an unknown name or parameter is
    a one-line error."""
    name, params = (entry, {}) if isinstance(entry, str) else (entry.get("name"), {k: v for k, v in entry.items()
                                                                                   if k != "name"})
    if name not in ATTACKS:
        raise UserError(f"unknown attack {name!r} for the domain protocol; valid: {', '.join(ATTACKS)}")
    spec = ATTACKS[name]
    extra = sorted(set(params) - set(spec.defaults))
    if extra:
        raise UserError(f"attack {name!r}: unknown parameter {extra[0]!r}; valid: {', '.join(spec.defaults) or 'none'}")
    for k, v in params.items():
        if not isinstance(v, (int, float)) or isinstance(v, bool) or v <= 0 or (k == "fraction" and v > 1):
            raise UserError(f"attack {name!r}: {k} = {v!r} must be a number > 0" + (" and <= 1" if k == "fraction" else ""))
    return name, {**spec.defaults, **params}


def subset(n: int, fraction: float, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed + 7919)
    return torch.randperm(n, generator=gen)[: max(1, round(n * fraction))]


def _finetune(module, preprocess, x, y, *, epochs, lr, seed, batch=32):
    gen = torch.Generator().manual_seed(seed)
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


def _shot_im(module, preprocess, x, *, epochs, lr, seed, batch=64):
    head = [m for m in module.modules() if isinstance(m, nn.Linear)][-1]
    frozen = {id(p) for p in head.parameters()}
    params = [p for p in module.parameters() if id(p) not in frozen]
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(params, lr=lr)
    module.train()
    for _ in range(int(epochs)):
        order = torch.randperm(len(x), generator=gen)
        for i in range(0, len(x), batch):
            p = module(preprocess(x[order[i : i + batch]])).softmax(1)
            entropy = -(p * p.clamp_min(1e-8).log()).sum(1).mean()
            mean = p.mean(0)
            diversity = -(mean * mean.clamp_min(1e-8).log()).sum()
            loss = entropy - diversity
            opt.zero_grad()
            loss.backward()
            opt.step()
    return module.eval()


def attack(entry, module: nn.Module, preprocess, *, source: tuple, targets: list[tuple], seed: int) -> nn.Module:
    """The attacked copy of `module`. `source`: (images, labels) of the source domain's training split;
    `targets`: (images, labels) per target domain (the same images in each domain)."""
    name, p = parse(entry)
    torch.manual_seed(seed)
    out = copy.deepcopy(module)
    if name == "none":
        return out.eval()
    if name == "source-ft":
        idx = subset(len(source[1]), p["fraction"], seed)
        return _finetune(out, preprocess, source[0][idx], source[1][idx], epochs=p["epochs"], lr=p["lr"], seed=seed)
    if name == "target-ft":
        idx = subset(len(targets[0][1]), p["fraction"], seed)
        x = torch.cat([t[0][idx] for t in targets])
        y = torch.cat([t[1][idx] for t in targets])
        return _finetune(out, preprocess, x, y, epochs=p["epochs"], lr=p["lr"], seed=seed)
    x = torch.cat([t[0] for t in targets])  # shot: every target image, unlabelled
    return _shot_im(out, preprocess, x, epochs=p["epochs"], lr=p["lr"], seed=seed)
