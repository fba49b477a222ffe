"""Model adapters: one interface over plain torch modules, timm, checkpoints and the zoo."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from functools import cached_property

import torch
import torch.nn as nn

from bench.errors import UserError
from bench.models.first_linear import FirstLinear, find_first_linear


@dataclass(frozen=True)
class Preprocess:
    """What the model expects: pixel-space input of `input_size`, normalized by mean/std.

    Resizing and cropping to `input_size` happen in the dataset step (see the suites);
    the adapter applies the normalization itself so defenses work in pixel space [0, 1].
    """

    mean: tuple[float, ...]
    std: tuple[float, ...]
    input_size: tuple[int, int, int]
    extra: dict = field(default_factory=dict)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        mean = torch.tensor(self.mean, dtype=x.dtype).view(1, -1, 1, 1)
        std = torch.tensor(self.std, dtype=x.dtype).view(1, -1, 1, 1)
        return (x - mean) / std

    def to_dict(self) -> dict:
        return json.loads(json.dumps(asdict(self)))


def weights_digest(module: nn.Module) -> str:
    """sha256 over every parameter and buffer (name, dtype, shape, bytes)."""
    h = hashlib.sha256()
    for name, t in sorted(module.state_dict().items()):
        t = t.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")  # reshape: 0-dim buffers
    return h.hexdigest()


class ModelAdapter:
    """A network behind one interface: identity, predict(), first_linear()."""

    def __init__(self, name: str, module: nn.Module, preprocess: Preprocess, arch: str, source: str):
        self.name = name
        self.module = module.eval()
        self.preprocess = preprocess
        self.arch = arch
        self.source = source

    def _forward(self, model_input: torch.Tensor) -> torch.Tensor:
        return self.module(model_input)

    @cached_property
    def identity(self) -> dict:
        """Architecture + weights + preprocessing: what makes two adapters the same model."""
        return {
            "arch": self.arch,
            "weights": weights_digest(self.module),
            "preprocess": self.preprocess.to_dict(),
        }

    @cached_property
    def digest(self) -> str:
        return hashlib.sha256(json.dumps(self.identity, sort_keys=True).encode()).hexdigest()

    def check_input(self, x: torch.Tensor) -> None:
        if x.ndim != 4 or tuple(x.shape[1:]) != tuple(self.preprocess.input_size):
            raise UserError(
                f"model {self.name!r} expects input (N, {', '.join(map(str, self.preprocess.input_size))}), "
                f"got {tuple(x.shape)}"
            )
        if not torch.isfinite(x).all():
            raise UserError(f"input to model {self.name!r} contains NaN or infinite values")

    @torch.no_grad()
    def predict(self, x: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
        """Logits for pixel-space images x (N, C, H, W)."""
        self.check_input(x)
        outs = [self._forward(self.preprocess(x[i : i + batch_size])).float() for i in range(0, len(x), batch_size)]
        return torch.cat(outs)

    @cached_property
    def _first_linear(self) -> FirstLinear:
        c, h, w = self.preprocess.input_size
        probe = torch.randn(1, c, h, w, generator=torch.Generator().manual_seed(0))
        scale = 1.0 / torch.tensor(self.preprocess.std, dtype=torch.float64)
        if scale.numel() == 1:
            scale = scale.expand(c).clone()
        return find_first_linear(self._forward, self.module, probe, scale)

    def first_linear(self) -> FirstLinear:
        """The first linear operator W (pixel space) and its map to the input tensor."""
        return self._first_linear

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, source={self.source!r}, arch={self.arch!r})"
