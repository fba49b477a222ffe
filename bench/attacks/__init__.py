"""Attacks applied to released data before the evaluated model sees it.

Input attacks (`kind = "input"`) transform the released data: the preprocessing an adversary
(or a careless pipeline) applies. Model attacks (`kind = "model"`, bench.attacks.model_attacks)
transform a released model with the attacker's data: fine-tuning, pruning, distillation.
third-party attacks plug in via the `authbench.attacks` entry point or 'module:Class'.
An attack entry in a suite is a name or an inline table {name = "...", <params>}.
"""

from __future__ import annotations

import io

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from bench.attacks.model_attacks import MODEL_ATTACKS
from bench.errors import UserError
from bench.registry import Plugin, describe, resolve

GROUP = "authbench.attacks"


class Attack(Plugin):
    """An input attack: transforms the released data."""

    plugin_type = "attack"
    kind = "input"

    def __call__(self, x: torch.Tensor, seed: int) -> torch.Tensor:
        raise NotImplementedError


class NoAttack(Attack):
    name = "none"
    description = "the released data as shipped"

    def __call__(self, x, seed):
        return x


class Jpeg(Attack):
    name = "jpeg"
    description = "JPEG re-encoding at a given quality (PIL)"
    defaults = {"quality": 75}

    def __call__(self, x, seed):
        out = []
        for img in x.clamp(0, 1):
            arr = (img.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
            pil = Image.fromarray(arr[..., 0] if arr.shape[-1] == 1 else arr)
            buf = io.BytesIO()
            pil.save(buf, format="JPEG", quality=int(self.params["quality"]))
            dec = np.asarray(Image.open(io.BytesIO(buf.getvalue())), dtype=np.float32) / 255.0
            out.append(torch.from_numpy(dec.reshape(arr.shape)).permute(2, 0, 1))
        return torch.stack(out).to(x.dtype)


class GaussianBlur(Attack):
    name = "blur"
    description = "Gaussian blur with a given sigma (pixels)"
    defaults = {"sigma": 1.0}

    def __call__(self, x, seed):
        sigma = float(self.params["sigma"])
        radius = max(1, int(3 * sigma + 0.5))
        t = torch.arange(-radius, radius + 1, dtype=x.dtype)
        k = torch.exp(-(t**2) / (2 * sigma**2))
        k = k / k.sum()
        c = x.shape[1]
        x = F.conv2d(F.pad(x, (radius, radius, 0, 0), mode="reflect"), k.view(1, 1, 1, -1).repeat(c, 1, 1, 1), groups=c)
        return F.conv2d(F.pad(x, (0, 0, radius, radius), mode="reflect"), k.view(1, 1, -1, 1).repeat(c, 1, 1, 1), groups=c)


BUILTIN = {cls.name: cls for cls in (NoAttack, Jpeg, GaussianBlur)}
BUILTIN.update(MODEL_ATTACKS)


def parse_attack(entry) -> tuple[str, dict]:
    """'name' or {name = ..., **params} -> (name, params)."""
    if isinstance(entry, str):
        return entry, {}
    if isinstance(entry, dict) and "name" in entry:
        return entry["name"], {k: v for k, v in entry.items() if k != "name"}
    raise UserError(f"attack entry {entry!r} must be a name or a table with a 'name' key")


def get_attack(entry) -> Attack:
    name, params = parse_attack(entry)
    return resolve("attack", GROUP, BUILTIN, name)(**params)


def attack_label(entry) -> str:
    name, params = parse_attack(entry)
    return name + ("(" + ",".join(f"{k}={v}" for k, v in sorted(params.items())) + ")" if params else "")


def list_attacks() -> dict[str, str]:
    return describe(GROUP, BUILTIN)
