"""Training-time countermeasures against unlearnable examples: what a data user does to learn from protected data
anyway (the standard attacks of the train-on-data protocol). They are attacks of the one attack registry
(`bench.attacks.ATTACKS`, listed by `authbench list attacks`):

- input attacks (bench.attacks.preprocessing), applied to the training images: a deterministic one once before
  training (`none`; Image Shortcut Squeezing: `jpeg` at quality 10, `bdr` bit-depth reduction, `grayscale`;
  Zhuoran Liu, Zhengyu Zhao, Martha Larson, "Image Shortcut Squeezing: Countering Perturbative Availability
  Poisons with Compression", ICML 2023), a `stochastic` one to every training batch with a fresh seed
  (augmentation: `cutout` after DeVries & Taylor 2017, `crop`, `gauss-noise`);
- training attacks (kind "train", registered here) that change the training loss: `mixup` (Zhang et al.,
  ICLR 2018) and `adv-train`, PGD adversarial training (Madry et al., ICLR 2018).

`Countermeasure` is how the protocol trains under one of them; `train_victim` trains a fresh network on a
training split under it.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from bench.attacks.base import ATTACKS, Attack, TrainingAttack, apply_attack
from bench.core.errors import UserError
from bench.data.base import Split
from bench.fingerprint.training import build_arch, fit, shift
from bench.unlearnable.methods import Norm, normalize, pgd_ascent

KINDS = ("input", "train")  # the attack kinds a data user can train under


@ATTACKS.register
class Mixup(TrainingAttack):
    name = "mixup"
    description = ("mixup augmentation while training on the data: Beta(alpha, alpha) mixing of images and labels "
                   "(Zhang, Cisse, Dauphin, Lopez-Paz, ICLR 2018)")
    defaults = {"alpha": 1.0}
    param_schema = {"alpha": {"type": "number", "exclusiveMinimum": 0}}

    def loss(self, model, normalize, x, y, gen):
        a = float(self.params["alpha"])
        lam = float(torch.distributions.Beta(a, a).sample())
        perm = torch.randperm(len(y), generator=gen).to(x.device)
        out = model(normalize(lam * x + (1 - lam) * x[perm]))
        return lam * F.cross_entropy(out, y) + (1 - lam) * F.cross_entropy(out, y[perm])


@ATTACKS.register
class AdversarialTraining(TrainingAttack):
    name = "adv-train"
    description = ("PGD adversarial training on the data, L-inf radius eps, `steps` steps of 2.5 eps / steps "
                   "(Madry, Makelov, Schmidt, Tsipras, Vladu, ICLR 2018)")
    defaults = {"eps": 4 / 255, "steps": 5}
    param_schema = {"eps": {"type": "number", "minimum": 0, "maximum": 1}, "steps": {"type": "integer", "minimum": 1}}

    def loss(self, model, normalize, x, y, gen):
        eps, steps = float(self.params["eps"]), int(self.params["steps"])
        was = model.training
        model.eval()
        adv = pgd_ascent(lambda a: model(normalize(a)), x, y, eps, steps, 2.5 * eps / steps, gen)
        model.train(was)
        return F.cross_entropy(model(normalize(adv)), y)


class Countermeasure:
    """Training under one attack: `prepare(images, seed)` once before training, `loss(...)` for every batch."""

    def __init__(self, attack):
        self.attack = attack
        self.name = attack.name

    def prepare(self, images: torch.Tensor, seed: int) -> torch.Tensor:
        """The training images as the data user trains on them: a deterministic input attack applied once."""
        if isinstance(self.attack, Attack) and not self.attack.stochastic and self.attack.name != "none":
            return apply_attack(self.attack, images, seed, np.arange(len(images)))
        return images

    def loss(self, model, norm: Norm, x: torch.Tensor, y: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        def norm_fn(t):
            return normalize(norm, t)

        if isinstance(self.attack, TrainingAttack):
            return self.attack.loss(model, norm_fn, x, y, gen)
        if isinstance(self.attack, Attack) and self.attack.stochastic:  # augmentation: new draws every batch
            step_seed = int(torch.randint(0, 2**31 - 1, (), generator=gen))
            # the data user's normalization is the reading model's (cutout's mean fill is its mean)
            x = apply_attack(self.attack, x, step_seed, np.arange(len(x)), norm=(norm.mean, norm.std))
        return F.cross_entropy(model(norm_fn(x)), y)


def get_countermeasure(entry) -> Countermeasure:
    """An attack entry ('name' or {name = ..., params}) as a training-time countermeasure: an input attack or a
    training attack (an unknown name or parameter, or another kind of attack: a UserError)."""
    from bench.attacks import attack_label, get_attack

    attack = get_attack(entry)
    if attack.kind not in KINDS:
        raise UserError(f"attack {attack_label(entry)!r} is of kind {attack.kind!r}; the train-on-data protocol trains "
                        f"under input attacks (applied to the training images: jpeg, bdr, grayscale, cutout, ...) or "
                        f"training attacks (mixup, adv-train)")
    return Countermeasure(attack)


def train_victim(family: str, train: Split, norm: Norm, counter: Countermeasure, epochs: int, lr: float,
                 seed: int) -> torch.nn.Module:
    """A fresh `family` network trained on `train` under `counter` (seeded; the zoo's AdamW recipe)."""
    images = counter.prepare(train.images, seed)
    data = Split(train.name, images, train.labels, train.indices, train.num_classes)
    gen = torch.Generator().manual_seed(seed + 7)
    torch.manual_seed(seed)
    module = build_arch(family, train.num_classes, train.images.shape[1])
    return fit(module, lambda m, x, y: counter.loss(m, norm, x, y, gen), data, epochs, lr, seed)


@torch.no_grad()
def top1(module, norm: Norm, images: torch.Tensor, labels: torch.Tensor, batch: int = 512) -> float:
    module.eval()
    hits = sum(int((module(normalize(norm, images[i:i + batch])).argmax(1) == labels[i:i + batch]).sum())
               for i in range(0, len(labels), batch))
    return 100.0 * hits / max(1, len(labels))


__all__ = ["Countermeasure", "KINDS", "get_countermeasure", "train_victim", "top1", "shift"]
