"""A model's input geometry: resize, then center crop to its input size, as a deployed pipeline does.

`Geometry` is the spatial half of a model's preprocessing (normalization is the other half,
`Preprocess.__call__`). It is linear in the pixels (no clamping), so the runner can lift a
direction from a model's input space back to pixel space (`lift`).

Convention: an image that already has the model's input size is taken as already
preprocessed for it and passes unchanged. This is what "model space" releases rely on:
data encoded at the authorized model's input size reaches its first layer exactly, and
every model with another input size applies its own resize and crop to it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from bench.core.errors import UserError

INTERPOLATIONS = ("nearest", "bilinear", "bicubic")
# PIL resample codes (used by transformers image processors) -> torch modes
PIL_RESAMPLE = {0: "nearest", 2: "bilinear", 3: "bicubic"}
CROP_MODES = ("center", "squash")


def interpolation_name(value) -> str:
    """'bilinear' / 'bicubic' / 'nearest' from a name, a PIL resample code or an enum."""
    if isinstance(value, int) and not isinstance(value, bool):
        name = PIL_RESAMPLE.get(int(value), f"PIL code {value}")
    else:
        name = str(getattr(value, "name", value)).lower().rsplit(".", 1)[-1]
    if name not in INTERPOLATIONS:
        raise UserError(f"interpolation {name!r} is not supported; valid choices: {', '.join(INTERPOLATIONS)} "
                        "(set interpolation = ... in the model spec)")
    return name


@dataclass(frozen=True)
class Geometry:
    """Resize (`resize`: int = shorter side, (h, w) = both sides, None = no resize), then center-crop
    (zero-padding where the image is smaller) to `crop` (h, w)."""

    resize: int | tuple[int, int] | None
    crop: tuple[int, int]
    interpolation: str = "bilinear"

    def resized_hw(self, h: int, w: int) -> tuple[int, int]:
        if self.resize is None:
            return h, w
        if isinstance(self.resize, int):  # shorter side, as torchvision's Resize(int)
            if h <= w:
                return self.resize, int(self.resize * w / h)
            return int(self.resize * h / w), self.resize
        return tuple(self.resize)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        if (h, w) == tuple(self.crop):
            return x
        size = self.resized_hw(h, w)
        if size != (h, w):
            mode = self.interpolation
            kwargs = {} if mode == "nearest" else {"align_corners": False, "antialias": True}
            x = F.interpolate(x, size=size, mode=mode, **kwargs)
        return center_crop(x, self.crop)

    def to_dict(self) -> dict:
        resize = list(self.resize) if isinstance(self.resize, tuple) else self.resize
        return {"resize": resize, "crop": list(self.crop), "interpolation": self.interpolation}


def center_crop(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Center crop to (h, w); zero-pads first where x is smaller (torchvision's CenterCrop rule)."""
    ch, cw = size
    h, w = x.shape[-2:]
    if h < ch or w < cw:
        ph, pw = max(ch - h, 0), max(cw - w, 0)
        x = F.pad(x, (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2))
        h, w = x.shape[-2:]
    top, left = int(round((h - ch) / 2.0)), int(round((w - cw) / 2.0))
    return x[..., top : top + ch, left : left + cw]


def from_crop_pct(input_hw: tuple[int, int], crop_pct: float | None, crop_mode: str = "center",
                  interpolation="bilinear") -> Geometry:
    """timm's eval transform: resize to floor(size / crop_pct) (shorter side for square inputs, both
    sides for crop_mode 'squash'), then center crop to the input size."""
    crop = tuple(int(v) for v in input_hw)
    interp = interpolation_name(interpolation)
    if crop_mode not in CROP_MODES:
        raise UserError(f"crop_mode {crop_mode!r} is not supported; valid choices: {', '.join(CROP_MODES)}")
    pct = float(crop_pct or 1.0)
    scaled = tuple(math.floor(v / pct) for v in crop)
    if crop_mode == "squash" or scaled[0] != scaled[1]:
        return Geometry(scaled, crop, interp)
    return Geometry(scaled[0], crop, interp)


def lift(apply: Callable[[torch.Tensor], torch.Tensor], target: torch.Tensor, pixel_shape: tuple[int, ...],
         iters: int = 40) -> tuple[torch.Tensor, torch.Tensor]:
    """Minimum-norm least-squares p with apply(p) ~= target for a linear map `apply` (per sample).

    CGLS (conjugate gradient on the normal equations R^T R p = R^T d, started at 0, which
    converges to the minimum-norm solution; R^T through autograd vector-Jacobian products).
    Returns (p, per-sample relative residual ||R p - d|| / ||d||): 0 where the direction is
    reachable from pixel space, large where the geometry upsamples and cannot express it.
    """
    d = target.to(torch.float64)
    zero = torch.zeros(pixel_shape, dtype=torch.float64, requires_grad=True)
    with torch.enable_grad():
        out = apply(zero)

        def adjoint(v: torch.Tensor) -> torch.Tensor:
            return torch.autograd.grad(out, zero, v, retain_graph=True)[0]

        def dot(a, b):
            return (a * b).flatten(1).sum(1).view(-1, *([1] * (a.ndim - 1)))

        p = torch.zeros(pixel_shape, dtype=torch.float64)
        r = d.clone()
        s = adjoint(r)
        q = s.clone()
        gamma = dot(s, s)
        for _ in range(iters):
            rq = apply(q).detach()
            alpha = gamma / dot(rq, rq).clamp_min(1e-300)
            p, r = p + alpha * q, r - alpha * rq
            s = adjoint(r)
            new_gamma = dot(s, s)
            q = s + (new_gamma / gamma.clamp_min(1e-300)) * q
            gamma = new_gamma
    residual = (apply(p) - d).flatten(1).norm(dim=1) / d.flatten(1).norm(dim=1).clamp_min(1e-300)
    return p, residual
