"""Defense protocols. A defense is a class with `name`, `protocol`, `description` and `defaults`.

Input authorization (NE, noise control): `fit(authorized, probe)` keeps the secret state
in memory; `directions(x, indices, labels)` draws one perturbation direction per sample;
the runner scales it to the target PSNR and applies the release format
(`bench.defenses.release.calibrate`). Secret state never leaves the object: `summary()`
is what may be recorded (sizes, timings), never the basis.
"""

from __future__ import annotations

import hashlib
from typing import ClassVar

import torch

from bench.errors import UserError
from bench.registry import merge_params


def sample_generator(seed: int, index: int, stream: str = "") -> torch.Generator:
    """A generator for one sample, independent of batching and order."""
    h = hashlib.sha256(f"{seed}|{stream}|{index}".encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(h[:8], "little") & ((1 << 63) - 1))


class Defense:
    name: ClassVar[str]
    protocol: ClassVar[str]
    description: ClassVar[str]
    defaults: ClassVar[dict] = {}

    def __init__(self, **params):
        self.params = merge_params("defense", self.name, self.defaults, params)


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
