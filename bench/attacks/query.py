"""Attacks on ownership verification at the suspect's deployment (MFUE Sec. 4.4-4.5, App. B).

Query processing (input attacks, applied to every query before the suspect sees it): flip and
rotation by a random angle with zero padding are defined here; the paper's other three are the
registry's preprocessing attacks: `crop` (low = high = 0.75: 24/32 and resize back),
`gauss-noise` (sigma = 16/255) and `blur` (sigma 0.8: the paper's 5x5 kernel).
DP-Logits (an output attack): Gaussian noise of scale sigma on the returned logits.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from bench.attacks.base import ATTACKS, Attack
from bench.errors import UserError


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(int(seed) & ((1 << 63) - 1))


@ATTACKS.register
class Flip(Attack):
    name = "flip"
    description = "horizontal (or vertical) flip of every query"
    defaults = {"axis": "horizontal"}

    def __call__(self, x, seed):
        if self.params["axis"] not in ("horizontal", "vertical"):
            raise UserError(f"flip axis must be 'horizontal' or 'vertical', got {self.params['axis']!r}")
        return x.flip(-1 if self.params["axis"] == "horizontal" else -2)


@ATTACKS.register
class Rotate(Attack):
    name = "rotate"
    description = "rotation by a random angle in [-max_deg, max_deg] per query, zero padding"
    defaults = {"max_deg": 30.0}

    def __call__(self, x, seed):
        m = float(self.params["max_deg"])
        angle = (torch.rand(len(x), generator=_gen(seed)) * 2 - 1) * m * math.pi / 180
        cos, sin = angle.cos(), angle.sin()
        theta = torch.stack([torch.stack([cos, -sin, torch.zeros_like(cos)], 1),
                             torch.stack([sin, cos, torch.zeros_like(cos)], 1)], 1).to(x.dtype)
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        return F.grid_sample(x, grid, padding_mode="zeros", align_corners=False)


@ATTACKS.register
class DPLogits(Attack):
    """An output attack: the deployed suspect adds noise to the logits it returns (MFUE Fig. 9)."""

    name = "dp-logits"
    kind = "output"
    description = "DP-Logits: Gaussian noise of scale sigma on the suspect's returned logits (verify suites only)"
    defaults = {"sigma": 1.0}

    def __call__(self, logits, seed):
        if logits.ndim != 2:
            raise UserError("dp-logits perturbs model outputs; use it only in suites of the verify protocol")
        return logits + float(self.params["sigma"]) * torch.randn(logits.shape, generator=_gen(seed))
