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
  pseudo-labelling step is not included (the paper's "SHOT-IM" ablation);
- `transntl`: TransNTL (Ziming Hong, Li Shen and Tongliang Liu, "Your Transferability Barrier is Fragile:
  Free-Lunch for Transferring the Non-Transferable Learning", CVPR 2024; code: github.com/tmllab/2024_CVPR_TransNTL,
  trainer_dshift.py): every layer fine-tuned on `fraction` of the labelled source images by cross-entropy plus
  `weight` x a group-DRO mix of three KL terms that tie the model's outputs on shifted copies of each batch
  (additive Gaussian noise, multiplicative Gaussian noise, both of std `std`, and a 5x5 Gaussian blur) to its
  detached outputs on the clean batch; optimiser: adaptive SAM (radius `rho`) around Adam (weight decay 1e-4). The
  shift-domain copies expose the narrow barrier of an NTL model just outside the source domain, and aligning them
  carries the source knowledge across it.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from bench.core.errors import UserError
from bench.ntl.methods import train_supervised


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
    "transntl": DomainAttack("transntl", "TransNTL: source fine-tuning that aligns shift-domain copies (noise, blur) with "
                             "the clean outputs under SAM (Hong, Shen & Liu, CVPR 2024)",
                             {"fraction": 0.1, "epochs": 30, "lr": 1e-3, "weight": 0.1, "rho": 0.5, "std": 0.2}),
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


def _blur(x: torch.Tensor, size: int = 5) -> torch.Tensor:
    """torchvision's gaussian_blur(x, kernel_size=5) (sigma 0.3 ((size - 1) / 2 - 1) + 0.8 = 1.1, reflect padding)."""
    sigma = 0.3 * ((size - 1) * 0.5 - 1) + 0.8
    r = torch.arange(size, dtype=x.dtype, device=x.device) - size // 2
    k = torch.exp(-(r**2) / (2 * sigma**2))
    k = k / k.sum()
    kernel = (k[:, None] * k[None, :]).expand(x.shape[1], 1, size, size)
    return F.conv2d(F.pad(x, (size // 2,) * 4, mode="reflect"), kernel, groups=x.shape[1])


def _transntl(module, preprocess, x, y, *, epochs, lr, seed, weight, rho, std, batch=32, dro_step=0.01):
    """The TransNTL fine-tuning loop (see the module docstring); `dro_step`: the group-DRO weights' exponentiated
    step (the code's robust_loss, updated at each of SAM's two passes as the code calls it twice)."""
    gen = torch.Generator().manual_seed(seed)
    params = [p for p in module.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=lr, weight_decay=1e-4)
    dro = torch.full((3,), 1 / 3, device=y.device)

    def loss_of(xb, yb, shifted):
        nonlocal dro
        clean = module(preprocess(xb))
        target = F.log_softmax(clean.detach(), 1)
        # the code's F.kl_div(..., reduction="mean", log_target=True): KL(clean || shifted) averaged over every entry
        kls = torch.stack([(target.exp() * (target - F.log_softmax(module(preprocess(s)), 1))).mean() for s in shifted])
        dro = dro * torch.exp(dro_step * kls.detach())
        dro = dro / dro.sum()
        return F.cross_entropy(clean, yb) + weight * (dro * kls).sum()

    module.train()
    for _ in range(int(epochs)):
        order = torch.randperm(len(y), generator=gen).to(y.device)
        for i in range(0, len(y), batch):
            idx = order[i : i + batch]
            xb, yb = x[idx], y[idx]
            noise = std * torch.randn(xb.shape, generator=gen).to(xb.device)
            shifted = [xb + noise, (1 + noise) * xb, _blur(xb)]
            opt.zero_grad()
            loss_of(xb, yb, shifted).backward()
            with torch.no_grad():  # adaptive SAM, first step: climb to the worst nearby weights
                norm = torch.norm(torch.stack([(p.abs() * p.grad).norm() for p in params if p.grad is not None]))
                scale = rho / (norm + 1e-12)
                climbs = {}
                for p in params:
                    if p.grad is not None:
                        climbs[p] = p.pow(2) * p.grad * scale
                        p.add_(climbs[p])
            opt.zero_grad()
            loss_of(xb, yb, shifted).backward()
            with torch.no_grad():  # second step: back to the weights, step with the gradient taken there
                for p, e in climbs.items():
                    p.sub_(e)
            opt.step()
    return module.eval()


def attack(entry, module: nn.Module, preprocess, *, source: tuple, targets: list[tuple], seed: int) -> nn.Module:
    """The attacked copy of `module`. `source`: (images, labels) of the source domain's training split;
    `targets`: (images, labels) per target domain (a transform domain: the source's images transformed; a dataset
    domain: that dataset's own training images, of its own size)."""
    name, p = parse(entry)
    torch.manual_seed(seed)
    out = copy.deepcopy(module)
    if name == "none":
        return out.eval()
    if name == "source-ft":
        idx = subset(len(source[1]), p["fraction"], seed)
        return train_supervised(out, preprocess, source[0][idx], source[1][idx], epochs=p["epochs"], lr=p["lr"], seed=seed,
                                batch=32)
    if name == "target-ft":
        idx = [subset(len(t[1]), p["fraction"], seed) for t in targets]  # the same positions in same-size domains
        x = torch.cat([t[0][i.to(t[0].device)] for t, i in zip(targets, idx)])
        y = torch.cat([t[1][i.to(t[1].device)] for t, i in zip(targets, idx)])
        return train_supervised(out, preprocess, x, y, epochs=p["epochs"], lr=p["lr"], seed=seed,
                                batch=32)
    if name == "transntl":
        idx = subset(len(source[1]), p["fraction"], seed)
        return _transntl(out, preprocess, source[0][idx], source[1][idx], epochs=p["epochs"], lr=p["lr"], seed=seed,
                         weight=p["weight"], rho=p["rho"], std=p["std"])
    x = torch.cat([t[0] for t in targets])  # shot: every target image, unlabelled
    return _shot_im(out, preprocess, x, epochs=p["epochs"], lr=p["lr"], seed=seed,
                                batch=32)
