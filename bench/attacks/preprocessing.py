"""Preprocessing attacks: what an adversary (or a careless pipeline) does to released images.

Each transforms pixel-space images (N, C, H, W) and keeps their size, so every model reads
the result as it would the released data. Randomness is drawn per sample from the seed and
the sample's position in the split (`positions`, default 0..n-1), so a split gives the same
output however it is batched.
"""

from __future__ import annotations

import io

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from bench.attacks.base import ATTACKS, Attack
from bench.defenses.base import sample_generator
from bench.core.errors import UserError


def _check_range(name: str, value, low: float, high: float) -> float:
    value = float(value)
    if not low <= value <= high:
        raise UserError(f"attack {name!r}: value {value} outside [{low}, {high}]")
    return value


JPEG_RANGES = ("clamp", "rescale")


def _jpeg_roundtrip(arr: np.ndarray, quality: int) -> np.ndarray:
    """uint8 (H, W, C) through a JPEG file of the given quality (PIL) and back, as float32 in [0, 1]."""
    pil = Image.fromarray(arr[..., 0] if arr.shape[-1] == 1 else arr)
    buf = io.BytesIO()
    pil.save(buf, format="JPEG", quality=quality)
    return (np.asarray(Image.open(io.BytesIO(buf.getvalue())), dtype=np.float32) / 255.0).reshape(arr.shape)


@ATTACKS.register
class Jpeg(Attack):
    name = "jpeg"
    description = ("JPEG re-encoding at a given quality (PIL; NE sweeps 95 -> 75, ISS uses 10); range 'clamp' (a real "
                   "JPEG file, default) or 'rescale' (the NE code's per-image min-max)")
    defaults = {"quality": 75, "range": "clamp"}
    param_schema = {"quality": {"type": "integer", "minimum": 1, "maximum": 100}}

    def __call__(self, x, seed, norm=None):
        """`norm` = (mean, std) of the model that reads the result (the protocols pass it): the code's 'rescale'
        stretches each image's normalized tensor (x - mean) / std to [0, 255] and maps the decoded image back."""
        quality = int(_check_range(self.name, self.params["quality"], 1, 100))
        mode = self.params["range"]
        if mode not in JPEG_RANGES:
            raise UserError(f"attack 'jpeg': unknown range {mode!r}; valid choices: {', '.join(JPEG_RANGES)}")
        if mode == "clamp":
            out = []
            for img in x.clamp(0, 1):
                arr = (img.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
                out.append(torch.from_numpy(_jpeg_roundtrip(arr, quality)).permute(2, 0, 1))
            return torch.stack(out).to(x.dtype)
        m, s = _norm(x, norm)
        xn = (x.to(torch.float64) - m) / s
        out = []
        for img in xn:
            low, high = img.min(), img.max()
            scale = (high - low).clamp_min(1e-6)
            arr = (((img - low) / scale).permute(1, 2, 0).numpy() * 255.0).clip(0, 255).round().astype(np.uint8)
            dec = torch.from_numpy(_jpeg_roundtrip(arr, quality)).permute(2, 0, 1).to(torch.float64)
            out.append(dec * scale + low)
        return (torch.stack(out) * s + m).to(x.dtype)


def _norm(x: torch.Tensor, norm) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean, std) per channel as (1, C, 1, 1) float64 tensors; (0, 1) when no model's normalization is given."""
    c = x.shape[1]
    mean, std = norm if norm is not None else ((0.0,), (1.0,))
    m, s = (torch.tensor([float(v) for v in t], dtype=torch.float64).expand(c).view(1, c, 1, 1) for t in (mean, std))
    return m, s


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur with reflect padding (radius 3 sigma)."""
    radius = max(1, int(3 * sigma + 0.5))
    t = torch.arange(-radius, radius + 1, dtype=x.dtype)
    k = torch.exp(-(t**2) / (2 * sigma**2))
    k = k / k.sum()
    c = x.shape[1]
    x = F.conv2d(F.pad(x, (radius, radius, 0, 0), mode="reflect"), k.view(1, 1, 1, -1).repeat(c, 1, 1, 1), groups=c)
    return F.conv2d(F.pad(x, (0, 0, radius, radius), mode="reflect"), k.view(1, 1, -1, 1).repeat(c, 1, 1, 1), groups=c)


@ATTACKS.register
class GaussianBlur(Attack):
    name = "blur"
    description = "Gaussian blur with a given sigma (pixels)"
    defaults = {"sigma": 1.0}

    def __call__(self, x, seed):
        return gaussian_blur(x, _check_range(self.name, self.params["sigma"], 1e-3, 100))


@ATTACKS.register
class RandomCrop(Attack):
    name = "crop"
    stochastic = True
    description = "random crop keeping a fraction of the image area drawn from [low, high], resized back (bilinear)"
    defaults = {"low": 0.6, "high": 0.9}

    def __call__(self, x, seed, positions=None):
        positions = range(len(x)) if positions is None else positions
        low = _check_range(self.name, self.params["low"], 0.01, 1)
        high = _check_range(self.name, self.params["high"], low, 1)
        h, w = x.shape[-2:]
        out = []
        for i, img in zip(positions, x):
            g = sample_generator(seed, int(i), self.name)
            keep = low + (high - low) * torch.rand((), generator=g).item()
            ch, cw = max(1, round(h * keep**0.5)), max(1, round(w * keep**0.5))
            top = int(torch.randint(0, h - ch + 1, (), generator=g))
            left = int(torch.randint(0, w - cw + 1, (), generator=g))
            crop = img[None, :, top : top + ch, left : left + cw]
            out.append(F.interpolate(crop, size=(h, w), mode="bilinear", align_corners=False)[0])
        return torch.stack(out)


CUTOUT_FILLS = ("mean", "black")


@ATTACKS.register
class Cutout(Attack):
    name = "cutout"
    stochastic = True
    description = ("fill one random square of side drawn from [low, high] of the image side (the public NE code's "
                   "'crop'); fill 'mean' (default, the code's: 0 on the normalized tensor, the normalization mean) "
                   "or 'black'")
    defaults = {"low": 0.1, "high": 0.4, "fill": "mean"}
    version = 2  # 1: filled black, unlabelled

    def __call__(self, x, seed, positions=None, norm=None):
        """The public code's `apply_crop_to_image(threshold)` zeroes a square of side threshold * H at a random
        place of the processor-normalized tensor, i.e. fills it with the normalization mean in pixel space; its
        sweep runs threshold over 10-40%, so the side is drawn per sample from [low, high]. `norm` = (mean, std)
        of the model that reads the result (the protocols pass it; without it 'mean' is mid grey, 0.5)."""
        positions = range(len(x)) if positions is None else positions
        low = _check_range(self.name, self.params["low"], 0.0, 1)
        high = _check_range(self.name, self.params["high"], low, 1)
        fill = self.params["fill"]
        if fill not in CUTOUT_FILLS:
            raise UserError(f"attack 'cutout': unknown fill {fill!r}; valid choices: {', '.join(CUTOUT_FILLS)}")
        c = x.shape[1]
        value = torch.zeros(c, dtype=x.dtype)
        if fill == "mean":
            value = _norm(x, norm)[0].view(c).to(x.dtype) if norm is not None else torch.full((c,), 0.5, dtype=x.dtype)
        h, w = x.shape[-2:]
        out = x.clone()
        for row, i in enumerate(positions):
            g = sample_generator(seed, int(i), self.name)
            side = low + (high - low) * torch.rand((), generator=g).item()
            ch, cw = max(1, int(h * side)), max(1, int(w * side))
            top = int(torch.randint(0, h - ch + 1, (), generator=g))
            left = int(torch.randint(0, w - cw + 1, (), generator=g))
            out[row, :, top : top + ch, left : left + cw] = value.view(c, 1, 1)
        return out


@ATTACKS.register
class Resize(Attack):
    name = "resize"
    description = "downscale by a factor (antialiased bilinear) and back up to the original size"
    defaults = {"scale": 0.5}

    def __call__(self, x, seed):
        scale = _check_range(self.name, self.params["scale"], 0.01, 4)
        h, w = x.shape[-2:]
        small = F.interpolate(x, size=(max(1, round(h * scale)), max(1, round(w * scale))), mode="bilinear",
                              antialias=True, align_corners=False)
        return F.interpolate(small, size=(h, w), mode="bilinear", align_corners=False)


@ATTACKS.register
class AddGaussianNoise(Attack):
    name = "gauss-noise"
    stochastic = True
    description = "add i.i.d. Gaussian pixel noise with standard deviation sigma"
    defaults = {"sigma": 0.05}

    def __call__(self, x, seed, positions=None):
        positions = range(len(x)) if positions is None else positions
        sigma = _check_range(self.name, self.params["sigma"], 0, 10)
        noise = torch.stack([torch.randn(x.shape[1:], generator=sample_generator(seed, int(i), self.name))
                             for i in positions])
        return x + sigma * noise.to(x.dtype)


@ATTACKS.register
class BitDepth(Attack):
    name = "bdr"
    description = ("bit-depth reduction to `bits` bits per channel (Image Shortcut Squeezing; Liu, Zhao, Larson, "
                   "ICML 2023)")
    defaults = {"bits": 2}
    param_schema = {"bits": {"type": "integer", "minimum": 1, "maximum": 8}}

    def __call__(self, x, seed):
        levels = 2 ** int(self.params["bits"]) - 1
        return (x.clamp(0, 1) * levels).round() / levels


@ATTACKS.register
class Grayscale(Attack):
    name = "grayscale"
    description = ("grayscale: every channel set to the channels' mean (Image Shortcut Squeezing; Liu, Zhao, Larson, "
                   "ICML 2023); a no-op on 1-channel images")

    def __call__(self, x, seed):
        return x.mean(1, keepdim=True).expand_as(x).clone()
