"""ALGOSPEC baseline (Liu et al., USENIX Security 2024) at digits scale.

ALGOSPEC turns the authorized algorithm (or a part of it) into a polynomial P of a chosen
highest order and releases, instead of each original value v, an *alternative*: another root
of P(t) = P(v). The authorized algorithm, which computes P, gets exactly the result it would
get on the original data; any other algorithm reads the alternatives.

Here the polynomial part is a per-pixel input stage P(v) = T_n(2v - 1) (Chebyshev, odd order n):
every value in [0, 1] has n preimages in [0, 1], so the released image stays a valid image. The
authorized algorithm is the model retrained on P(x); the released data is x with every pixel
replaced by a root drawn per (seed, image, pixel). Unauthorized = the suite's other models on
the same released data.
"""

from __future__ import annotations

import copy
import hashlib
import math
import time

import torch
import torch.nn as nn

from bench.defenses.base import Evaluation, ModelDefense, Protected
from bench.errors import UserError
from bench.models.adapter import ModelAdapter, Preprocess


class ChebyshevStage(nn.Module):
    """P(v) = T_n(2v - 1): the authorized algorithm's polynomial part (identical on v and its alternatives)."""

    def __init__(self, order: int):
        super().__init__()
        self.order = order

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = (2 * x - 1).clamp(-1, 1)
        return torch.cos(self.order * torch.acos(s))


class Alternatives(nn.Module):
    """The release: each pixel v -> a root t of P(t) = P(v), drawn per (seed, image content, pixel)."""

    def __init__(self, order: int, seed: int):
        super().__init__()
        self.order, self.seed = order, seed

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        theta = torch.acos((2 * x - 1).clamp(-1, 1)) * self.order  # P(v) = cos(theta)
        out = torch.empty_like(x)
        for i, xi in enumerate(x):
            digest = hashlib.sha256(f"{self.seed}|".encode() + xi.numpy().tobytes()).digest()
            g = torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") & ((1 << 63) - 1))
            j = torch.randint(0, self.order, xi.shape, generator=g)
            out[i] = (torch.cos((theta[i] + 2 * math.pi * j) / self.order) + 1) / 2
        return out


class ReleasedDataAdapter(ModelAdapter):
    """`inner` evaluated on the released alternatives of its input."""

    def __init__(self, name: str, inner: ModelAdapter, release: Alternatives):
        super().__init__(name, inner.module, inner.preprocess, inner.arch, inner.source)
        self.inner, self.release = inner, release

    @torch.no_grad()
    def predict(self, x: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
        self.check_input(x)
        return self.inner.predict(self.release(x), batch_size)


class AlgoSpec(ModelDefense):
    name = "algospec"
    description = "ALGOSPEC: release polynomial alternatives of each pixel; only the polynomial pipeline recovers utility"
    defaults = {"order": 3, "epochs": 15, "lr": 1e-3}

    def __init__(self, **params):
        super().__init__(**params)
        if self.params["order"] < 3 or self.params["order"] % 2 == 0:
            raise UserError(f"defense 'algospec': order must be odd and >= 3 (got {self.params['order']}); "
                            "an even order maps black and white to the same value")

    def protect(self, model: ModelAdapter, train, seed: int) -> Protected:
        from baselines.fhe import finetune

        t0 = time.perf_counter()
        stage = ChebyshevStage(self.params["order"])
        pipeline = nn.Sequential(stage, copy.deepcopy(model.module))
        identity = Preprocess((0.0,) * len(model.preprocess.mean), (1.0,) * len(model.preprocess.std),
                              model.preprocess.input_size)
        finetune(pipeline[1], stage, train, self.params["epochs"], self.params["lr"], seed)
        release = Alternatives(self.params["order"], seed)
        protect_ms = (time.perf_counter() - t0) * 1000
        x = train.images[:64]
        t1 = time.perf_counter()
        released = release(x)
        per_sample = (time.perf_counter() - t1) * 1000 / len(x)
        cost = {
            "protect_ms": protect_ms,
            "retraining": True,
            "architecture_changed": True,
            "notes": f"authorized model retrained on the per-pixel polynomial T_{self.params['order']}(2x-1)",
            "artifact_bytes": int(released[0].numel() * released.element_size()),  # released data per sample
            "time_per_sample_ms": per_sample,
            "polynomial_error": float((stage(released) - stage(x)).abs().max()),
        }
        key = {"pipeline": pipeline.eval(), "identity": identity}
        return Protected(release, key, cost)

    def authorized(self, protected: Protected, model: ModelAdapter) -> ModelAdapter:
        inner = ModelAdapter(f"{model.name}[algospec]", protected.key["pipeline"], protected.key["identity"],
                             model.arch, model.source)
        return ReleasedDataAdapter(inner.name, inner, protected.released)

    def evaluations(self, protected: Protected, model: ModelAdapter, others: dict) -> list[Evaluation]:
        auth = self.authorized(protected, model)
        return [Evaluation(auth.name, auth, "authorized")] + [
            Evaluation(label, ReleasedDataAdapter(label, a, protected.released), "unauthorized")
            for label, a in others.items()
        ]
