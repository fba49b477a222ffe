"""Defense protocols. A defense is a class with `name`, `protocol`, `description` and `defaults`.

Model authorization (CoreLocker, DP, FHE, ALGOSPEC): `protect(model, train, seed)` returns a
`Protected` (released artifact + secret key + costs); `authorized(protected, model)` is what the
key holder runs; `evaluations(...)` lists every model a cell scores with its role.

Input authorization (NE, noise control): `fit(authorized, probe)` keeps the secret state
in memory; `directions(x, indices, labels)` draws one perturbation direction per sample;
the runner scales it to the target PSNR and applies the release format
(`bench.defenses.release.calibrate`). Secret state never leaves the object: `summary()`
is what may be recorded (sizes, timings), never the basis.

`directions` takes one batch on any device and returns float64 directions on that device.
Sample i's direction depends only on (seed, defense, indices[i], labels[i], code), never on
the batch: the codes are drawn per sample from seeded CPU generators (`code_generator`),
stacked and moved to the device once (`batched_directions`), and turned into directions there
by batched operations whose per-sample results do not depend on the other samples.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
import torch
import torch.nn as nn

from bench.core.errors import UserError
from bench.core.registry import Plugin, Registry


def sample_generator(seed: int, index: int, stream: str = "") -> torch.Generator:
    """A generator for one sample, independent of batching and order."""
    h = hashlib.sha256(f"{seed}|{stream}|{index}".encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(h[:8], "little") & ((1 << 63) - 1))


def as_ints(values) -> list[int]:
    """Dataset indices or labels (a list, an np.ndarray, or a tensor on any device) as Python ints."""
    if isinstance(values, torch.Tensor):
        return [int(v) for v in values.detach().cpu().reshape(-1).tolist()]
    return [int(v) for v in np.asarray(values).reshape(-1).tolist()]


def device_of(x) -> torch.device:
    """Where a batch lives (the CPU when the caller passes no tensor, e.g. `directions(None, ...)`)."""
    return x.device if isinstance(x, torch.Tensor) else torch.device("cpu")


# per-group working-set budget of a batched encode: groups of samples are drawn, moved and
# transformed in turn (results do not depend on the grouping). On an accelerator it bounds peak
# memory at 224x224; on the CPU it is kept near the cache size, where large batched temporaries
# (transposes, scatters) run several times slower than cache-resident ones.
GROUP_BYTES = {"cpu": 16 * 2**20, "other": 256 * 2**20}


class Defense(Plugin):
    plugin_type = "defense"
    protocol: ClassVar[str]
    # the board it ranks on (bench.reports.boards); None: its protocol's. The NE Table 3 baselines: "baselines"
    board: ClassVar[str | None] = None


# every defense: the built-ins register themselves (@DEFENSES.register) in the modules named here, imported
# on first lookup; third-party ones are `authbench.defenses` entry points or 'package.module:Class' paths
DEFENSES: Registry[type[Defense]] = Registry(
    "defense", "authbench.defenses", base=Defense,
    modules=("bench.defenses.ne", "bench.defenses.noise", "bench.defenses.corelocker", "bench.defenses.locks", "baselines",
             "bench.fingerprint", "bench.ntl.defenses", "bench.unlearnable.methods"))


class InputDefense(Defense):
    """Protects data for one authorized model by recoding the inputs."""

    protocol = "input"
    model_specific: ClassVar[bool] = True
    codes: ClassVar[tuple[str, ...]] = ("instance", "class", "client")

    def __init__(self, **params):
        super().__init__(**params)
        if self.params.get("code", "instance") not in self.codes:
            raise UserError(f"unknown code {self.params['code']!r}; valid choices: {', '.join(self.codes)}")

    @classmethod
    def canonical_params(cls, params: dict, input_size: Callable[[], tuple[int, ...]]) -> dict:
        """`params` as they resolve for an authorized model whose input is `input_size()` (C, H, W): two
        entries with the same canonical parameters are one job (the engine merges them). Default: as given."""
        return params

    def fit(self, authorized, probe=None) -> None:
        """Derive the secret state from the authorized model (no-op for model-agnostic defenses)."""

    def code_key(self, index: int, label: int) -> int:
        """Which code a sample gets: its own (instance), its class's, or the client's one code."""
        code = self.params.get("code", "instance")
        return {"instance": index, "class": -1 - label, "client": -(10**9)}[code]

    def code_generator(self, seed: int, index: int, label: int) -> torch.Generator:
        """Per instance (default), per class, or one fixed code per client, as the paper allows."""
        return sample_generator(seed, self.code_key(index, label), self.name)

    def directions(self, x: torch.Tensor, indices, labels, seed: int) -> torch.Tensor:
        """One float64 direction per sample of the batch `x` (N, C, H, W), on x's device."""
        raise NotImplementedError

    # --- batched encoding helpers -------------------------------------------------------

    def distinct_codes(self, indices, labels) -> tuple[list[tuple[int, int]], torch.Tensor | None]:
        """The distinct codes of a batch, as the (index, label) of the first sample with each, and
        for every sample the position of its code in that list (None when all are distinct).

        Samples sharing a code (code "class" or "client", or a repeated index) get the very same
        draw, so it is drawn once. A subclass overriding `code_generator` without `code_key` gets
        one draw per sample."""
        idx, lab = as_ints(indices), as_ints(labels)
        if len(idx) != len(lab):
            raise ValueError(f"directions: {len(idx)} indices but {len(lab)} labels")
        pairs = list(zip(idx, lab))
        if type(self).code_generator is not InputDefense.code_generator:
            return pairs, None
        position: dict[int, int] = {}
        firsts, which = [], []
        for i, y in pairs:
            key = self.code_key(i, y)
            if key not in position:
                position[key] = len(firsts)
                firsts.append((i, y))
            which.append(position[key])
        if len(firsts) == len(pairs):
            return pairs, None
        return firsts, torch.tensor(which, dtype=torch.long)

    def draw_codes(self, seed: int, samples: Sequence[tuple[int, int]], shape: tuple[int, ...],
                   device: torch.device | str = "cpu") -> torch.Tensor:
        """torch.randn(shape, generator=self.code_generator(seed, i, y), dtype=float64) for each
        (i, y) of `samples`, drawn on the CPU (the very values a per-sample draw gives), stacked,
        and moved to `device` once: (len(samples), *shape)."""
        z = torch.empty(len(samples), *shape, dtype=torch.float64)
        for row, (i, y) in zip(z, samples):
            torch.randn(shape, generator=self.code_generator(seed, i, y), dtype=torch.float64, out=row)
        return z.to(device)

    def batched_directions(self, x, indices, labels, seed: int, code_shape: tuple[int, ...],
                           out_shape: tuple[int, ...], build: Callable[[torch.Tensor], torch.Tensor],
                           item_bytes: int = 0) -> torch.Tensor:
        """The batched encode every built-in input defense shares.

        The distinct codes are drawn on the CPU per sample (`draw_codes`), moved to x's device a
        group at a time (at most GROUP_BYTES of work per group, `item_bytes` per code), turned
        into directions there by `build` (codes (G, *code_shape) -> directions (G, *out_shape),
        batched, with each sample's result independent of the others), and gathered back to the
        samples: (N, *out_shape) float64 on x's device."""
        device = device_of(x)
        samples, which = self.distinct_codes(indices, labels)
        per = max(int(item_bytes), 8 * int(np.prod(code_shape, dtype=np.int64)), 1)
        size = max(1, GROUP_BYTES["cpu" if device.type == "cpu" else "other"] // per)
        out = torch.empty(len(samples), *out_shape, dtype=torch.float64, device=device)
        for start in range(0, len(samples), size):
            part = samples[start : start + size]
            out[start : start + len(part)] = build(self.draw_codes(seed, part, code_shape, device))
        return out if which is None else out[which.to(device)]

    # psnr_mode "paper-code" (bench.defenses.release.calibrate_paper_code): whether the public NE code
    # draws the perturbation afresh after computing its scale (NE: yes; its Gaussian control: no)
    paper_code_fresh: ClassVar[bool] = True

    def patch_noise(self, x: torch.Tensor, indices, labels, seed: int, fl, std) -> torch.Tensor:
        """The perturbation in the unfolded-patch domain of the authorized first layer `fl`, on the
        processor-normalized tensor (per-channel `std`): (N, n, L) float64 on x's device. Only defenses
        that the public NE code's strength rule covers have one (psnr_mode "paper-code")."""
        raise UserError(f"defense {self.name!r} has no per-patch noise: psnr_mode 'paper-code' takes ne-patch or noise")

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
