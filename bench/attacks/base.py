"""Attack base classes, by what the attacker touches.

- `Attack` (kind "input"): a fixed transform of the released data (`__call__(x, seed)`).
- `LearnedAttack` (kind "learned"): first learns from the attacker's own released data
  (`fit(view, seed)`, view = bench.attacks.attacker.AttackerView), then transforms the released
  test data: reconstruction by a denoiser, projection of an estimated recoding subspace.
- `AdaptationAttack` (kind "adapt"): adapts each unauthorized model to the released data
  (`adapt(adapter, view, seed)` -> adapter); the released test data reach it unchanged.
- `bench.attacks.model.ModelAttack` (kind "model"): transforms a released model (CoreLocker).
- `TrainingAttack` (kind "train"): changes how a data user trains on protected training data (mixup,
  adversarial training: the train-on-data protocol's countermeasures, bench.unlearnable.countermeasures).
  That protocol also takes input attacks: each is applied to the training images (a deterministic one once,
  ISS-style; a `stochastic` one to every batch, as augmentation).
"""

from __future__ import annotations

import inspect

import numpy as np
import torch

from bench.attacks.model import ModelAttack
from bench.core.registry import Plugin, Registry


class Attack(Plugin):
    """An input attack: transforms the released data."""

    plugin_type = "attack"
    kind = "input"
    version = 1  # bumped where a default changes what the attack outputs (bench.attacks.base.attack_identity)
    # True when the transform draws randomness (per sample, from the seed): applied to training data it is an
    # augmentation, drawn anew for every batch; a deterministic one is applied to the training images once
    stochastic = False

    def __call__(self, x: torch.Tensor, seed: int, positions: np.ndarray | None = None) -> torch.Tensor:
        """Attack the batch x; `positions` (default 0..n-1) are the samples' positions in the split, which
        seed per-sample randomness, so a split attacked in batches equals the split attacked at once."""
        raise NotImplementedError


def apply_attack(attack, x: torch.Tensor, seed: int, positions: np.ndarray, norm=None) -> torch.Tensor:
    """Apply an input-side attack to one batch (on the CPU, where PIL and the learned attacks run), passing
    the batch's positions to attacks that take them (third-party attacks may take only (x, seed)), and
    `norm` = (mean, std) of the model that reads the result to attacks that take it (cutout's mean fill,
    jpeg's per-image rescale: the public NE code applies both to the normalized tensor)."""
    device = x.device
    x = x.cpu()
    params = inspect.signature(attack.__call__).parameters
    extra = {"positions": positions} if "positions" in params else {}
    if "norm" in params:
        extra["norm"] = norm
    return attack(x, seed, **extra).to(device)


def attack_identity(attack) -> dict:
    """What an attack entry contributes to an input identity: its label, and its version where a default changed
    (outputs cached under an older default are then not reused)."""
    from bench.attacks import attack_label, get_attack

    version = getattr(get_attack(attack), "version", 1)
    return {"attack": attack_label(attack), **({"version": version} if version != 1 else {})}


class NoAttack(Attack):
    name = "none"
    description = "the released data as shipped"

    def __call__(self, x, seed, positions=None):
        return x


class LearnedAttack(Attack):
    """An input attack that learns from the attacker's own released data before transforming."""

    kind = "learned"
    trains = True

    def fit(self, view, seed: int) -> dict:
        """Learn from `view` (AttackerView); return non-secret facts to record (e.g. train loss)."""
        raise NotImplementedError


class AdaptationAttack(Plugin):
    """Adapts an unauthorized model to the released data (the data itself is left as released)."""

    plugin_type = "attack"
    kind = "adapt"
    trains = True

    def adapt(self, adapter, view, seed: int):
        """Return an adapted copy of `adapter` (a ModelAdapter); never modify it in place."""
        raise NotImplementedError


class TrainingAttack(Plugin):
    """A training-time countermeasure to protected training data: the loss a data user trains with."""

    plugin_type = "attack"
    kind = "train"
    trains = True

    def loss(self, model, normalize, x: torch.Tensor, y: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        """The training loss of `model` on the pixel-space batch (x, y); `normalize(x)` is what the model reads;
        `gen` seeds the attack's randomness."""
        raise NotImplementedError


BASES = (Attack, AdaptationAttack, ModelAttack, TrainingAttack)  # what a third-party attack subclasses

# every attack: the built-ins register themselves (@ATTACKS.register) in the modules named here, imported on
# first lookup; third-party ones are `authbench.attacks` entry points or 'package.module:Class' paths
ATTACKS: Registry[type[Plugin]] = Registry(
    "attack", "authbench.attacks", base=BASES,
    modules=("bench.attacks.preprocessing", "bench.attacks.reconstruction", "bench.attacks.projection",
             "bench.attacks.adaptation", "bench.attacks.model_attacks", "bench.attacks.query",
             "bench.unlearnable.countermeasures"))
ATTACKS.register(NoAttack)
