"""Unlearnable-example defenses: `DataDefense.protect_data(train, seed)` returns the protected training images.

A data defense perturbs every training image within an L-inf budget `eps` (pixel space, images in [0, 1]) so
that a model trained on the protected images learns little that transfers to clean test images. It is the
training-time counterpart of NE: NE keeps data useful to one authorized model at inference; an unlearnable
example makes data useless to every model that trains on it. Built-ins:

- `clean-data`: no perturbation (the reference row: what training on the data as is gives).
- `em`: error-minimizing noise (Huang et al., ICLR 2021), sample-wise or class-wise.
- `rem`: robust error-minimizing noise (Fu et al., ICLR 2022), min-min-max with adversarial radius `rho`.
- `tap`: targeted adversarial poisoning (Fowl et al., NeurIPS 2021) from a model trained on clean data.
- `lsp`: synthetic linearly separable patch noise (Yu et al., KDD 2022), model-free.

Each follows its paper by default and its public code where the paper is silent; where the code departs from
the paper the departure is a labelled parameter (docs/unlearnable.md has the table). The source (crafting)
models are digits-zoo families (`source`), trained with the zoo's AdamW recipe (lr 2e-3, weight decay 1e-4)
instead of the papers' ResNet-18 with SGD lr 0.1: the budget is CPU-minutes, not GPU-hours.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F

from bench.data.base import Split
from bench.defenses.base import DEFENSES, Defense
from bench.core.errors import UserError
from bench.fingerprint.training import build_arch, ce_loss, fit, shift
from bench.models.zoo import FAMILIES

PROTOCOL = "train-on-data"


@dataclass(frozen=True)
class Norm:
    """Per-channel normalization of a split (what every source model sees: (x - mean) / std)."""

    mean: tuple
    std: tuple


def split_norm(split: Split) -> Norm:
    x = split.images
    return Norm(tuple(float(v) for v in x.mean((0, 2, 3))), tuple(max(float(v), 1e-6) for v in x.std((0, 2, 3))))


def normalize(norm: Norm, x: torch.Tensor) -> torch.Tensor:
    mean = torch.tensor(norm.mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    std = torch.tensor(norm.std, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    return (x - mean) / std


@dataclass(frozen=True, kw_only=True)
class ProtectedData:
    """What `DataDefense.protect_data` returns: the protected images (same order and labels as the split) and
    non-secret facts (the measured L-inf and mean L2 of the perturbation, the wall time, source-model facts)."""

    images: torch.Tensor
    cost: dict


class DataDefense(Defense):
    """Protects a training split: `perturbation(train, seed)` -> delta (N, C, H, W); `protect_data` applies it,
    clips to [0, 1] and measures it."""

    protocol = PROTOCOL
    bounded: ClassVar[bool] = True  # the perturbation is projected into the L-inf ball of radius eps

    def __init__(self, **params):
        super().__init__(**params)
        eps = self.params.get("eps", 0.0)
        if not 0 <= eps <= 1:
            raise UserError(f"defense {self.name!r}: eps must be in [0, 1] (pixel scale, e.g. 8/255 = 0.0314), got {eps!r}")
        source = self.params.get("source")
        if source is not None and source not in FAMILIES:
            raise UserError(f"defense {self.name!r}: unknown source {source!r}; valid: {', '.join(FAMILIES)}")

    def perturbation(self, train: Split, seed: int) -> tuple[torch.Tensor, dict]:
        raise NotImplementedError

    def protect_data(self, train: Split, seed: int) -> ProtectedData:
        start = time.perf_counter()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            delta, facts = self.perturbation(train, seed)
        images = (train.images + delta.to(train.images.dtype)).clamp(0, 1)
        moved = (images - train.images).flatten(1)
        cost = {"protect_s": round(time.perf_counter() - start, 3), "linf": float(moved.abs().max()) if len(moved) else 0.0,
                "l2_mean": float(moved.norm(dim=1).mean()) if len(moved) else 0.0, **facts}
        return ProtectedData(images=images, cost=cost)


def _project(delta: torch.Tensor, x: torch.Tensor, eps: float) -> torch.Tensor:
    """delta within the L-inf ball of radius eps and with x + delta in [0, 1]."""
    return (x + delta.clamp(-eps, eps)).clamp(0, 1) - x


def _batches(n: int, size: int, gen: torch.Generator | None = None):
    order = torch.randperm(n, generator=gen) if gen is not None else torch.arange(n)
    return [order[i:i + size] for i in range(0, n, size)]


def _source(family: str, train: Split) -> torch.nn.Module:
    return build_arch(family, train.num_classes, train.images.shape[1])


def _accuracy(model, norm, x, y, batch=512) -> float:
    model.eval()
    with torch.no_grad():
        hits = sum(int((model(normalize(norm, x[i:i + batch])).argmax(1) == y[i:i + batch]).sum())
                   for i in range(0, len(y), batch))
    return hits / max(1, len(y))


@DEFENSES.register
class CleanData(DataDefense):
    name = "clean-data"
    description = "no protection: the training split as is (the reference row of the train-on-data protocol)"
    bounded = False

    def perturbation(self, train, seed):
        return torch.zeros_like(train.images), {}


@DEFENSES.register
class ErrorMinimizing(DataDefense):
    """Error-minimizing noise. Hanxun Huang, Xingjun Ma, Sarah Monazam Erfani, James Bailey, Yisen Wang,
    "Unlearnable Examples: Making Personal Data Unexploitable", ICLR 2021 (code: HanxunH/Unlearnable-Examples).

    Bi-level min-min: a source model is trained for `train_steps` batches on the perturbed data, then every
    sample's noise takes `steps` signed-gradient steps of size `step_size` that *decrease* the source model's
    loss, projected into the eps ball; repeated until the source model's error on the perturbed data is below
    `stop_error` (or `max_rounds`). Sample-wise by default (the paper's main setting; code defaults: 20 steps of
    0.8/255, stop error 0.01, 10 train steps, noise initialised uniformly in [-eps, eps]); `mode = "classwise"`
    is one noise per class (code: 1 step per batch, the class noise moved to the mean of its samples' updated
    noises, stop error 0.1)."""

    name = "em"
    paper = {"authors": "Hanxun Huang, Xingjun Ma, Sarah Monazam Erfani, James Bailey, Yisen Wang",
             "title": "Unlearnable Examples: Making Personal Data Unexploitable", "venue": "ICLR 2021",
             "link": "https://github.com/HanxunH/Unlearnable-Examples"}
    description = ("error-minimizing noise, bi-level min-min with a source model (Huang, Ma, Erfani, Bailey, Wang: "
                   "Unlearnable Examples: Making Personal Data Unexploitable, ICLR 2021)")
    trains = True
    defaults = {"eps": 8 / 255, "mode": "samplewise", "steps": 20, "step_size": 0.8 / 255, "train_steps": 10,
                "stop_error": 0.01, "max_rounds": 20, "batch": 128, "source": "resnet", "lr": 2e-3}
    param_schema = {"mode": {"enum": ["samplewise", "classwise"]}, "steps": {"type": "integer", "minimum": 1},
                    "train_steps": {"type": "integer", "minimum": 0}, "max_rounds": {"type": "integer", "minimum": 1},
                    "batch": {"type": "integer", "minimum": 1}, "stop_error": {"type": "number", "minimum": 0},
                    "step_size": {"type": "number", "exclusiveMinimum": 0}, "lr": {"type": "number", "exclusiveMinimum": 0}}

    def perturbation(self, train, seed):
        p = self.params
        eps, classwise = float(p["eps"]), p["mode"] == "classwise"
        x, y, n = train.images, train.labels, len(train.labels)
        norm = split_norm(train)
        gen = torch.Generator().manual_seed(seed)
        shape = (train.num_classes, *x.shape[1:]) if classwise else tuple(x.shape)
        noise = (torch.rand(shape, generator=gen) * 2 - 1) * eps
        model = _source(p["source"], train)
        opt = torch.optim.AdamW(model.parameters(), lr=float(p["lr"]), weight_decay=1e-4)

        def delta_of(idx):
            return noise[y[idx]] if classwise else noise[idx]

        cursor, rounds, error = _batches(n, int(p["batch"]), gen), 0, 1.0
        for rounds in range(1, int(p["max_rounds"]) + 1):
            model.train()
            for _ in range(int(p["train_steps"])):  # train the source model on the current protected data
                if not cursor:
                    cursor = _batches(n, int(p["batch"]), gen)
                idx = cursor.pop()
                loss = F.cross_entropy(model(normalize(norm, (x[idx] + delta_of(idx)).clamp(0, 1))), y[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
            model.eval()
            for idx in _batches(n, int(p["batch"])):  # minimise the loss over the noise
                xb, yb = x[idx], y[idx]
                d = delta_of(idx).clone()
                for _ in range(int(p["steps"])):
                    d.requires_grad_(True)
                    loss = F.cross_entropy(model(normalize(norm, (xb + d).clamp(0, 1))), yb)
                    (grad,) = torch.autograd.grad(loss, d)
                    d = _project(d.detach() - float(p["step_size"]) * grad.sign(), xb, eps)
                if classwise:
                    for c in yb.unique():
                        noise[c] = d[yb == c].mean(0).clamp(-eps, eps)
                else:
                    noise[idx] = d
            delta = noise[y] if classwise else noise
            error = 1 - _accuracy(model, norm, (x + delta).clamp(0, 1), y)
            if error < float(p["stop_error"]):
                break
        delta = (noise[y] if classwise else noise).clone()
        return _project(delta, x, eps), {"rounds": rounds, "source_error": round(error, 4),
                                         "source_clean_error": round(1 - _accuracy(model, norm, x, y), 4)}


def pgd_max(model, norm, x, y, rho, steps, step_size, gen):
    """The inner maximisation of REM and adversarial training: untargeted L-inf PGD around x (random start)."""
    return pgd_ascent(lambda a: model(normalize(norm, a)), x, y, rho, steps, step_size, gen)


def pgd_ascent(forward, x, y, rho, steps, step_size, gen):
    """Untargeted L-inf PGD around pixel-space x (random start) against `forward(x)` -> logits."""
    if rho <= 0 or steps <= 0:
        return x
    adv = (x + (torch.rand(x.shape, generator=gen).to(x.device) * 2 - 1) * rho).clamp(0, 1)
    for _ in range(steps):
        adv.requires_grad_(True)
        loss = F.cross_entropy(forward(adv), y)
        (grad,) = torch.autograd.grad(loss, adv)
        adv = (x + (adv.detach() + step_size * grad.sign() - x).clamp(-rho, rho)).clamp(0, 1)
    return adv.detach()


@DEFENSES.register
class RobustErrorMinimizing(DataDefense):
    """Robust error-minimizing noise. Shaopeng Fu, Fengxiang He, Yang Liu, Li Shen, Dacheng Tao, "Robust
    Unlearnable Examples: Protecting Data Privacy Against Adversarial Learning", ICLR 2022 (code:
    fshp971/robust-unlearnable-examples).

    min over the source model and the defensive noise (radius eps) of the expected (over `samples` random
    augmentations, EOT) loss *maximised* by an adversarial perturbation of radius `rho`: the noise survives
    adversarial training up to rho. Code defaults (generate_robust_em.py, README): per step one batch's noise
    takes 10 PGD steps of 1.6/255 (radius 8/255) against 10 PGD steps of 0.8/255 (radius 4/255, random start),
    5 EOT samples, then one adversarial-training step of the source model; after `train_steps` steps every
    sample's noise is regenerated. The augmentation here is the digits zoo's random shift (the code: crop + flip)."""

    name = "rem"
    paper = {"authors": "Shaopeng Fu, Fengxiang He, Yang Liu, Li Shen, Dacheng Tao",
             "title": "Robust Unlearnable Examples: Protecting Data Privacy Against Adversarial Learning",
             "venue": "ICLR 2022", "link": "https://github.com/fshp971/robust-unlearnable-examples"}
    description = ("robust error-minimizing noise, min-min-max against adversarial training of radius rho (Fu, He, "
                   "Liu, Shen, Tao: Robust Unlearnable Examples: Protecting Data Privacy Against Adversarial "
                   "Learning, ICLR 2022)")
    trains = True
    defaults = {"eps": 8 / 255, "rho": 4 / 255, "steps": 10, "step_size": 1.6 / 255, "atk_steps": 10,
                "atk_step_size": 0.8 / 255, "samples": 5, "train_steps": 5000, "batch": 128, "source": "resnet",
                "lr": 2e-3}
    param_schema = {"rho": {"type": "number", "minimum": 0, "maximum": 1}, "steps": {"type": "integer", "minimum": 1},
                    "atk_steps": {"type": "integer", "minimum": 0}, "samples": {"type": "integer", "minimum": 1},
                    "train_steps": {"type": "integer", "minimum": 1}, "batch": {"type": "integer", "minimum": 1},
                    "step_size": {"type": "number", "exclusiveMinimum": 0},
                    "atk_step_size": {"type": "number", "exclusiveMinimum": 0},
                    "lr": {"type": "number", "exclusiveMinimum": 0}}

    def _perturb(self, model, norm, xb, yb, d, gen):
        p = self.params
        eps, rho = float(p["eps"]), float(p["rho"])
        model.eval()
        for _ in range(int(p["steps"])):
            grad = torch.zeros_like(d)
            for _ in range(int(p["samples"])):  # expectation over transformations
                d.requires_grad_(True)
                t = shift((xb + d).clamp(0, 1), gen)
                adv = pgd_max(model, norm, t.detach(), yb, rho, int(p["atk_steps"]), float(p["atk_step_size"]), gen)
                loss = F.cross_entropy(model(normalize(norm, t + (adv - t).detach())), yb)
                grad += torch.autograd.grad(loss, d)[0]
                d = d.detach()
            d = _project(d - float(p["step_size"]) * grad.sign(), xb, eps)
        return d

    def perturbation(self, train, seed):
        p = self.params
        x, y, n = train.images, train.labels, len(train.labels)
        norm = split_norm(train)
        gen = torch.Generator().manual_seed(seed)
        noise = torch.zeros_like(x)
        model = _source(p["source"], train)
        opt = torch.optim.AdamW(model.parameters(), lr=float(p["lr"]), weight_decay=1e-4)
        cursor = []
        for _ in range(int(p["train_steps"])):
            if not cursor:
                cursor = _batches(n, int(p["batch"]), gen)
            idx = cursor.pop()
            xb, yb = x[idx], y[idx]
            noise[idx] = self._perturb(model, norm, xb, yb, noise[idx].clone(), gen)
            t = shift((xb + noise[idx]).clamp(0, 1), gen)
            adv = pgd_max(model, norm, t, yb, float(p["rho"]), int(p["atk_steps"]), float(p["atk_step_size"]), gen)
            model.train()
            loss = F.cross_entropy(model(normalize(norm, adv)), yb)
            opt.zero_grad()
            loss.backward()
            opt.step()
        for idx in _batches(n, int(p["batch"])):  # the final noise of every sample, from the final source model
            noise[idx] = self._perturb(model, norm, x[idx], y[idx], noise[idx].clone(), gen)
        error = 1 - _accuracy(model, norm, (x + noise).clamp(0, 1), y)
        return _project(noise, x, float(p["eps"])), {"source_error": round(error, 4),
                                                     "source_clean_error": round(1 - _accuracy(model, norm, x, y), 4)}


@DEFENSES.register
class TargetedAdversarialPoison(DataDefense):
    """Adversarial poisoning. Liam Fowl, Micah Goldblum, Ping-yeh Chiang, Jonas Geiping, Wojciech Czaja, Tom
    Goldstein, "Adversarial Examples Make Strong Poisons", NeurIPS 2021 (code: lhfowl/adversarial_poisons).

    A crafting model is trained on the clean data; every training image becomes a *targeted* adversarial example
    of it (class-targeted: label y is pushed towards `(y + 1) mod K`, the code's label permutation), `steps` = 250
    signed-gradient steps (the code's attackiter) of size eps x `tau` (tau = 0.05, the code's step rule) from a
    uniform random start, the best of `restarts` (code default 8) kept per sample. `recipe = "untargeted"`:
    the paper's untargeted variant (ascend the true label's loss). The code also runs each step through a
    differentiable data augmentation; `augment = true` does that with the zoo's random shift."""

    name = "tap"
    paper = {"authors": "Liam Fowl, Micah Goldblum, Ping-yeh Chiang, Jonas Geiping, Wojciech Czaja, Tom Goldstein",
             "title": "Adversarial Examples Make Strong Poisons", "venue": "NeurIPS 2021",
             "link": "https://github.com/lhfowl/adversarial_poisons"}
    description = ("targeted adversarial poisoning from a model trained on clean data (Fowl, Goldblum, Chiang, "
                   "Geiping, Czaja, Goldstein: Adversarial Examples Make Strong Poisons, NeurIPS 2021)")
    trains = True
    defaults = {"eps": 8 / 255, "recipe": "targeted", "steps": 250, "tau": 0.05, "restarts": 8, "augment": False,
                "source": "resnet", "source_epochs": 10, "batch": 256, "lr": 2e-3}
    param_schema = {"recipe": {"enum": ["targeted", "untargeted"]}, "steps": {"type": "integer", "minimum": 1},
                    "tau": {"type": "number", "exclusiveMinimum": 0}, "restarts": {"type": "integer", "minimum": 1},
                    "source_epochs": {"type": "integer", "minimum": 1}, "batch": {"type": "integer", "minimum": 1},
                    "lr": {"type": "number", "exclusiveMinimum": 0}}

    def perturbation(self, train, seed):
        p = self.params
        eps = float(p["eps"])
        x, y = train.images, train.labels
        norm = split_norm(train)
        model = fit(_source(p["source"], train), ce_loss(norm), train, int(p["source_epochs"]), float(p["lr"]), seed)
        model.eval()
        gen = torch.Generator().manual_seed(seed + 1)
        targeted = p["recipe"] == "targeted"
        step = eps * float(p["tau"])
        best = torch.zeros_like(x)
        for idx in _batches(len(y), int(p["batch"])):
            xb, yb = x[idx], y[idx]
            goal = (yb + 1) % train.num_classes if targeted else yb
            best_loss = torch.full((len(idx),), float("inf"))
            for _ in range(int(p["restarts"])):
                d = _project((torch.rand(xb.shape, generator=gen) * 2 - 1) * eps, xb, eps)
                for _ in range(int(p["steps"])):
                    d.requires_grad_(True)
                    inp = (xb + d).clamp(0, 1)
                    inp = shift(inp, gen) if p["augment"] else inp
                    loss = F.cross_entropy(model(normalize(norm, inp)), goal)
                    (grad,) = torch.autograd.grad(loss, d)
                    direction = -grad.sign() if targeted else grad.sign()
                    d = _project(d.detach() + step * direction, xb, eps)
                with torch.no_grad():
                    per = F.cross_entropy(model(normalize(norm, (xb + d).clamp(0, 1))), goal, reduction="none")
                    per = per if targeted else -per
                    better = per < best_loss
                    best_loss = torch.where(better, per, best_loss)
                    best[idx[better]] = d[better]
        hit = _accuracy(model, norm, (x + best).clamp(0, 1), (y + 1) % train.num_classes if targeted else y)
        return _project(best, x, eps), {"target_hit" if targeted else "source_acc": round(hit, 4),
                                        "source_clean_acc": round(_accuracy(model, norm, x, y), 4)}


@DEFENSES.register
class LinearSeparablePoison(DataDefense):
    """Synthetic shortcut noise. Da Yu, Huishuai Zhang, Wei Chen, Jian Yin, Tie-Yan Liu, "Availability Attacks
    Create Shortcuts", KDD 2022 (code: dayu11/Availability-Attacks-Create-Shortcuts).

    Model-free: class-wise Gaussian clusters in a low dimension (one feature per `patch` x `patch` patch and
    channel; cluster centres on the vertices of a hypercube of half-side `class_sep` = 10, unit within-class
    variance, like the code's make_classification call), each feature repeated over its patch (patch 8 on 32x32
    images). `projection = "l2"` (default, the public code's cifar_train.py): every sample is scaled to the L2
    norm eps x sqrt(d), the L2 size of an L-inf eps perturbation, so single pixels may exceed eps (code default
    eps 6/255); `projection = "linf"`: scaled into the L-inf ball of radius eps, the harness's common budget."""

    name = "lsp"
    paper = {"authors": "Da Yu, Huishuai Zhang, Wei Chen, Jian Yin, Tie-Yan Liu",
             "title": "Availability Attacks Create Shortcuts", "venue": "KDD 2022",
             "link": "https://github.com/dayu11/Availability-Attacks-Create-Shortcuts"}
    description = ("synthetic linearly separable patch noise, model-free (Yu, Zhang, Chen, Yin, Liu: Availability "
                   "Attacks Create Shortcuts, KDD 2022)")
    defaults = {"eps": 6 / 255, "patch": 8, "class_sep": 10.0, "projection": "l2"}
    param_schema = {"patch": {"type": "integer", "minimum": 1}, "class_sep": {"type": "number", "exclusiveMinimum": 0},
                    "projection": {"enum": ["l2", "linf"]}}

    @property
    def bounded(self):
        return self.params["projection"] == "linf"

    def perturbation(self, train, seed):
        p = self.params
        eps, patch = float(p["eps"]), int(p["patch"])
        x, y = train.images, train.labels
        c, h, w = x.shape[1:]
        gh, gw = -(-h // patch), -(-w // patch)
        dim = c * gh * gw
        gen = torch.Generator().manual_seed(seed)
        centres = torch.empty(train.num_classes, dim)
        for k in range(train.num_classes):  # distinct hypercube vertices
            while True:
                v = (torch.randint(0, 2, (dim,), generator=gen) * 2 - 1).float()
                if dim > 16 or not any(torch.equal(v, centres[j]) for j in range(k)):
                    break
            centres[k] = v
        feats = centres[y] * float(p["class_sep"]) + torch.randn(len(y), dim, generator=gen)
        grid = feats.view(len(y), c, gh, gw).repeat_interleave(patch, 2).repeat_interleave(patch, 3)[..., :h, :w]
        flat = grid.flatten(1)
        if p["projection"] == "l2":
            delta = flat / flat.norm(dim=1, keepdim=True) * eps * (c * h * w) ** 0.5
        else:
            delta = flat / flat.abs().amax(dim=1, keepdim=True) * eps
        delta = delta.view_as(x)
        return (x + delta).clamp(0, 1) - x, {"dim": dim}
