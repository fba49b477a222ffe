"""Where an input defense recodes the data relative to the models' preprocessing (`[data] encode_space`).

- "model" (default): the stored images are first brought to the authorized model's input
  geometry (its resize + center crop, `Preprocess.geometry`); the defense encodes there, at
  the model's native resolution; the released image has that resolution. Every evaluated
  model then applies its own resize, crop and normalization to the released image (a model
  whose input size equals it takes it as is, so the authorized model reads it exactly).
- "pixel": the defense encodes the stored images at the dataset's resolution, before any
  model's preprocessing. The authorized model's geometry R (resize + crop, linear) sits in
  front of its first layer, so a direction d drawn in its input space is lifted to pixel
  space as the minimum-norm least-squares solution of R p = d (bench.models.geometry.lift),
  and the PSNR is calibrated in pixel space. The lift's relative residual is recorded
  (`defense_summary.lift_residual`): 0 where R can express d, near 1 where R upsamples
  (e.g. CIFAR-10's 32 x 32 pixels in front of a 224 x 224 model).
Normalization (mean/std) always comes after either, inside each model's adapter.
"""

from __future__ import annotations

import hashlib
import json

import torch

from bench.core.errors import UserError
from bench.models.geometry import lift

ENCODE_SPACES = ("model", "pixel")
LIFT_CHUNK = 32
_last_lift: list = [None, None]  # (key, result) of the last lift


def encode_space(data: dict) -> str:
    space = data.get("encode_space", "model")
    if space not in ENCODE_SPACES:
        raise UserError(f"[data] encode_space {space!r} is unknown; valid choices: {', '.join(ENCODE_SPACES)}")
    return space


def space_input(x: torch.Tensor, authorized, space: str) -> torch.Tensor:
    """The images the defense encodes: the authorized model's input geometry ("model") or x ("pixel")."""
    if authorized is None or space == "pixel":
        return x
    return authorized.preprocess.geometry(x)


def space_transform(x: torch.Tensor, authorized, space: str) -> dict | None:
    """What the encode space does to stored images of x's size, for input identities (None: nothing)."""
    if authorized is None:
        return None
    if space == "pixel":
        return {"encode_space": "pixel"}
    geometry = authorized.preprocess.geometry
    if tuple(x.shape[-2:]) == tuple(geometry.crop):
        return None
    return {"encode_space": "model", "geometry": geometry.to_dict()}


def to_pixels(dirs: torch.Tensor, x: torch.Tensor, authorized) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Directions at x's resolution: unchanged when they already are, else lifted through the authorized
    model's geometry in chunks; returns (directions, per-sample lift residual or None)."""
    if tuple(dirs.shape[-2:]) == tuple(x.shape[-2:]):
        return dirs, None
    if authorized is None:
        raise UserError(f"directions of shape {tuple(dirs.shape[1:])} do not match the data {tuple(x.shape[1:])}")
    geometry = authorized.preprocess.geometry
    key = hashlib.sha256(json.dumps([list(x.shape), geometry.to_dict()]).encode()
                         + dirs.detach().cpu().contiguous().numpy().tobytes()).hexdigest()
    if _last_lift[0] == key:  # the same directions at every PSNR point and release format: lift once
        return _last_lift[1]
    lifted, residuals = [], []
    for i in range(0, len(dirs), LIFT_CHUNK):
        shape = (min(LIFT_CHUNK, len(dirs) - i), *x.shape[1:])
        p, r = lift(geometry, dirs[i : i + LIFT_CHUNK], shape)
        lifted.append(p)
        residuals.append(r)
    _last_lift[:] = [key, (torch.cat(lifted), torch.cat(residuals))]
    return _last_lift[1]
