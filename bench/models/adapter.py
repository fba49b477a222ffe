"""Model adapters: one interface over plain torch modules, timm, checkpoints and the zoo."""

from __future__ import annotations

import hashlib
import json
import os
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import asdict, dataclass, field
from functools import cached_property

import torch
import torch.nn as nn

from bench.errors import UserError
from bench.models.first_linear import FirstLinear, find_first_linear
from bench.models.geometry import Geometry, from_crop_pct, interpolation_name


@dataclass(frozen=True)
class Preprocess:
    """What the model expects: pixel-space input resized and cropped to `input_size`, normalized by mean/std.

    The geometry (resize, center crop, interpolation: `geometry`) comes from `resize` and
    `interpolation` when given (transformers processors, suite overrides), else from timm's
    `crop_pct` / `crop_mode` / `interpolation` in `extra`, else shorter side to the input size.
    It applies only to input of another size (see bench.models.geometry); the adapter applies
    geometry and normalization itself, so defenses work in pixel space [0, 1].
    """

    mean: tuple[float, ...]
    std: tuple[float, ...]
    input_size: tuple[int, int, int]
    extra: dict = field(default_factory=dict)
    resize: int | tuple[int, int] | None = None
    interpolation: str | None = None

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        mean = torch.tensor(self.mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
        std = torch.tensor(self.std, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
        return (x - mean) / std

    @cached_property
    def geometry(self) -> Geometry:
        """Resize + center crop from any pixel-space size to `input_size` (identity at that size)."""
        crop = tuple(self.input_size[1:])
        interp = self.interpolation or self.extra.get("interpolation") or "bilinear"
        if self.resize is not None:
            resize = self.resize if isinstance(self.resize, int) else tuple(self.resize)
            return Geometry(resize, crop, interpolation_name(interp))
        return from_crop_pct(crop, self.extra.get("crop_pct"), self.extra.get("crop_mode") or "center", interp)

    def to_dict(self) -> dict:
        out = json.loads(json.dumps(asdict(self)))
        for key in ("resize", "interpolation"):  # only when set: older identities stay unchanged
            if out[key] is None:
                del out[key]
        return out


DEVICES = ("auto", "cpu", "cuda", "cuda:<index>")


def resolve_device(name: str | None = None) -> torch.device:
    """The compute device for `name` (cpu, cuda, cuda:N or auto). auto: $AUTHBENCH_DEVICE when set,
    else CUDA when available, else the CPU. Asking for CUDA where there is none is a user error."""
    name = str(name or "auto")
    if name == "auto":
        name = os.environ.get("AUTHBENCH_DEVICE") or ("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UserError(f"device {name!r} is not a torch device; valid choices: {', '.join(DEVICES)}") from None
    if device.type not in ("cpu", "cuda"):
        raise UserError(f"device {name!r} is not supported; valid choices: {', '.join(DEVICES)}")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UserError(f"device {name!r} asked for, but torch sees no CUDA device here; use --device cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise UserError(f"device {name!r}: only {torch.cuda.device_count()} CUDA device(s) here")
    return device


_RUN_DEVICE: ContextVar[torch.device | None] = ContextVar("authbench_run_device", default=None)


def run_device() -> torch.device:
    """The device of the job running now (the run's --device / [run] device, set by the engine around each job:
    `on_device`), else the default (resolve_device: $AUTHBENCH_DEVICE, else CUDA when available, else the CPU).
    Every training step (suspect zoos, MFUE, learned attacks) and every model loader reads it."""
    current = _RUN_DEVICE.get()
    return current if current is not None else resolve_device(None)


@contextmanager
def on_device(device: torch.device):
    """Within the block, `run_device()` is `device`."""
    token = _RUN_DEVICE.set(torch.device(device))
    try:
        yield
    finally:
        _RUN_DEVICE.reset(token)


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
        self.init_seed: int | None = None  # the seed of a random initialisation (bench.models.sources.load_model)

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
        channels = self.preprocess.input_size[0]
        if x.ndim != 4 or x.shape[1] != channels:
            raise UserError(
                f"model {self.name!r} expects input (N, {channels}, H, W) (resized and cropped to "
                f"{tuple(self.preprocess.input_size[1:])}), got {tuple(x.shape)}"
            )
        if not torch.isfinite(x).all():
            raise UserError(f"input to model {self.name!r} contains NaN or infinite values")

    @property
    def device(self) -> torch.device:
        """Where the module's weights are (the module stays there: see `to`)."""
        return next(self.module.parameters(), torch.empty(0)).device

    def to(self, device: torch.device) -> "ModelAdapter":
        """Move the module to `device` once; every later predict runs there."""
        self.module.to(device)
        return self

    @torch.no_grad()
    def predict(self, x: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
        """Logits (float32, on x's device) for pixel-space images x (N, C, H, W) of any size: the model's
        own resize and crop (`preprocess.geometry`), then its normalization, on the module's device."""
        self.check_input(x)
        pre, device = self.preprocess, self.device
        outs = [self._forward(pre(pre.geometry(x[i : i + batch_size].to(device)))).float().to(x.device)
                for i in range(0, len(x), batch_size)]
        return torch.cat(outs)

    @cached_property
    def _first_linear(self) -> FirstLinear:
        c, h, w = self.preprocess.input_size
        probe = torch.randn(1, c, h, w, generator=torch.Generator().manual_seed(0)).to(self.device)
        scale = 1.0 / torch.tensor(self.preprocess.std, dtype=torch.float64)
        if scale.numel() == 1:
            scale = scale.expand(c).clone()
        shift = torch.tensor(self.preprocess.mean, dtype=torch.float64).expand(c).clone()
        return find_first_linear(self._forward, self.module, probe, scale, shift)

    def first_linear(self) -> FirstLinear:
        """The first linear operator W (pixel space) and its map to the input tensor."""
        return self._first_linear

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, source={self.source!r}, arch={self.arch!r})"
