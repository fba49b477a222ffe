"""Gaussian-noise control: the same PSNR as NE with no model in mind.

Evaluated beside every NE point so that noise fragility is never mistaken for
model specificity.
"""

from __future__ import annotations

import torch

from bench.defenses.base import DEFENSES, InputDefense


@DEFENSES.register
class GaussianNoise(InputDefense):
    name = "noise"
    description = "Gaussian-noise control at the same PSNR (model-agnostic)"
    defaults = {"code": "instance"}
    model_specific = False

    def directions(self, x, indices, labels, seed):
        """An i.i.d. standard Gaussian image per sample (per code), drawn on the CPU, on x's device."""
        shape = tuple(x.shape[1:])
        return self.batched_directions(x, indices, labels, seed, shape, shape, lambda z: z)

    paper_code_fresh = False  # the public code scales its one Gaussian draw

    def patch_noise(self, x, indices, labels, seed, fl, std):
        """As the public code's Gaussian control: i.i.d. N(0, 1) entries over the unfolded (n, L) patches of
        the authorized first layer `fl` (so overlapping patches get independent noise, summed by the fold)."""
        shape = tuple(fl.unfold(torch.zeros(1, *fl.input_shape, dtype=torch.float64)).shape[1:])
        return self.batched_directions(x, indices, labels, seed, shape, shape, lambda z: z)


@DEFENSES.register
class Clean(InputDefense):
    name = "none"
    description = "no protection: the clean baseline every table starts from"
    defaults = {}
    model_specific = False

    def directions(self, x, indices, labels, seed):
        return torch.zeros_like(x, dtype=torch.float64)
