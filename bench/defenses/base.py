"""Defense protocols. A defense is a class with `name`, `protocol`, `description` and `defaults`.

Model authorization (CoreLocker, DP, FHE, ALGOSPEC): `protect(model, train, seed)` returns a
`Protected` (released artifact + secret key + costs); `authorized(protected, model)` is what the
key holder runs; `evaluations(...)` lists every model a cell scores with its role.

Input authorization (NE, noise control): `fit(authorized, probe)` keeps the secret state
in memory; `directions(x, indices, labels)` draws one perturbation direction per sample;
the runner scales it to the target PSNR and applies the release format
(`bench.defenses.release.calibrate`). Secret state never leaves the object: `summary()`
is what may be recorded (sizes, timings), never the basis.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import ClassVar

import torch
import torch.nn as nn

from bench.errors import UserError
from bench.registry import Plugin


def sample_generator(seed: int, index: int, stream: str = "") -> torch.Generator:
    """A generator for one sample, independent of batching and order."""
    h = hashlib.sha256(f"{seed}|{stream}|{index}".encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(h[:8], "little") & ((1 << 63) - 1))


class Defense(Plugin):
    plugin_type = "defense"
    protocol: ClassVar[str]


class InputDefense(Defense):
    """Protects data for one authorized model by recoding the inputs."""

    protocol = "input"
    model_specific: ClassVar[bool] = True
    codes: ClassVar[tuple[str, ...]] = ("instance", "class", "client")

    def __init__(self, **params):
        super().__init__(**params)
        if self.params.get("code", "instance") not in self.codes:
            raise UserError(f"unknown code {self.params['code']!r}; valid choices: {', '.join(self.codes)}")

    def fit(self, authorized, probe=None) -> None:
        """Derive the secret state from the authorized model (no-op for model-agnostic defenses)."""

    def code_generator(self, seed: int, index: int, label: int) -> torch.Generator:
        """Per instance (default), per class, or one fixed code per client, as the paper allows."""
        code = self.params.get("code", "instance")
        key = {"instance": index, "class": -1 - label, "client": -(10**9)}[code]
        return sample_generator(seed, key, self.name)

    def directions(self, x: torch.Tensor, indices, labels, seed: int) -> torch.Tensor:
        raise NotImplementedError

    def summary(self) -> dict:
        """Non-secret facts about the fitted state, recorded in results."""
        return {}


@dataclass
class Protected:
    """What `ModelDefense.protect` returns: the released artifact, the secret, and measured costs.

    `released` is what everyone gets; `key` is what only the authorized party holds (never
    written to results); `cost` is JSON-serialisable (e.g. key_bytes, protect_ms,
    retraining: bool, architecture_changed: bool, notes: str).
    """

    released: nn.Module
    key: dict[str, torch.Tensor]
    cost: dict = field(default_factory=dict)


@dataclass
class Evaluation:
    """One model a model-authorization cell scores: its label, adapter and role."""

    label: str
    adapter: object  # ModelAdapter
    role: str  # "authorized" | "unauthorized"


class ModelDefense(Defense):
    """Protects a model: `protect` releases it locked/encrypted/retrained; the key holder keeps utility."""

    protocol = "model"

    def protect(self, model, train, seed: int) -> Protected:
        """Protect `model` (a ModelAdapter) using the defender's `train` split (a Split)."""
        raise NotImplementedError

    def authorized(self, protected: Protected, model):
        """The adapter the key holder runs (e.g. the unlocked model)."""
        raise NotImplementedError

    def evaluations(self, protected: Protected, model, others: dict) -> list[Evaluation]:
        """What a cell scores: the authorized model, and the released artifact without the key.

        `others` maps label -> adapter for the suite's other models (a defense whose released
        artifact is data others can use, e.g. DP, scores them as unauthorized)."""
        released = type(model)(f"{model.name}[released]", protected.released, model.preprocess, model.arch, model.source)
        return [
            Evaluation(model.name, self.authorized(protected, model), "authorized"),
            Evaluation(released.name, released, "unauthorized"),
        ]
