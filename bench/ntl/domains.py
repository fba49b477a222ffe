"""Offline domains built from the shipped digits (pixel space [0, 1], N x C x H x W): each is a fixed,
documented transform of the source images, so an authorized / unauthorized domain pair needs no download.

- `source`: the images as they are;
- `contrast`: contrast halved around mid-grey, x -> 0.25 + 0.5 x (a model trained on the source still reads
  it well: the shift NTL must break);
- `invert`: x -> 1 - x (white digits on black become black on white);
- `blur`: a 5x5 Gaussian blur, sigma 1 (on the 32 x 32 upsampled digits);
- `noise`: additive Gaussian noise, sigma 0.1, clipped to [0, 1], seeded per image index;
- `heavy-noise`: the same with sigma 0.3 (its own seeds): far enough from the source that NTL can close it, and
  of the kind of shift TransNTL's augmentations imitate;
- `shift`: a translation by 4 pixels right and down, zero fill.
Real domain pairs are other datasets: a domain "dataset:<name>" (e.g. "dataset:stl10" beside a CIFAR-10 suite)
is read by bench.protocols.domain from that dataset's own splits, its classes mapped onto the suite's by name.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from bench.core.errors import UserError


def _blur(x: torch.Tensor, sigma: float = 1.0, size: int = 5) -> torch.Tensor:
    r = torch.arange(size, dtype=x.dtype) - size // 2
    k = torch.exp(-(r**2) / (2 * sigma**2))
    k = k / k.sum()
    kernel = (k[:, None] * k[None, :]).expand(x.shape[1], 1, size, size)
    return F.conv2d(F.pad(x, (size // 2,) * 4, mode="replicate"), kernel, groups=x.shape[1])


def _noise(x: torch.Tensor, indices: torch.Tensor | None, sigma: float = 0.1, salt: int = 17) -> torch.Tensor:
    idx = indices if indices is not None else torch.arange(len(x))
    out = torch.empty_like(x)
    for row, i in enumerate(idx.tolist()):
        gen = torch.Generator().manual_seed(1_000_003 * int(i) + salt)
        out[row] = (x[row] + sigma * torch.randn(x[row].shape, generator=gen, dtype=x.dtype)).clamp(0, 1)
    return out


def _shift(x: torch.Tensor, pixels: int = 4) -> torch.Tensor:
    return F.pad(x, (pixels, 0, pixels, 0))[..., : x.shape[-2], : x.shape[-1]]


DOMAINS = {
    "source": lambda x, idx: x,
    "contrast": lambda x, idx: 0.25 + 0.5 * x,
    "invert": lambda x, idx: 1 - x,
    "blur": lambda x, idx: _blur(x),
    "noise": _noise,
    "heavy-noise": lambda x, idx: _noise(x, idx, 0.3, 29),
    "shift": lambda x, idx: _shift(x),
}


def to_domain(name: str, x: torch.Tensor, indices: torch.Tensor | None = None) -> torch.Tensor:
    """The images of `x` in domain `name` (a pure function of the images and their dataset indices)."""
    if name not in DOMAINS:
        raise UserError(f"unknown domain {name!r}; valid: {', '.join(DOMAINS)}")
    return DOMAINS[name](x, indices)
