"""Reconstruction attack (NE paper Table 8): a denoiser trained on the attacker's released data.

`target = "noise2noise"` (black box): pairs of two independent releases of the same images.
`target = "noise2clean"` (white box): released -> clean pairs. The denoiser is a small residual
CNN (DnCNN-style: conv-ReLU layers predicting the perturbation, subtracted from the input),
trained with MSE. The attacked data is the denoiser's output on the released test images;
the runner records its PSNR against the clean images beside the released PSNR.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from bench.attacks.base import LearnedAttack
from bench.attacks.model_attacks import train_module
from bench.errors import UserError

TARGETS = ("noise2noise", "noise2clean")


class ResidualDenoiser(nn.Module):
    def __init__(self, channels: int, width: int, depth: int):
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(channels, width, 3, padding=1), nn.ReLU()]
        for _ in range(depth - 2):
            layers += [nn.Conv2d(width, width, 3, padding=1), nn.ReLU()]
        layers.append(nn.Conv2d(width, channels, 3, padding=1))
        self.body = nn.Sequential(*layers)

    def forward(self, x):
        return x - self.body(x)


class Reconstruct(LearnedAttack):
    name = "reconstruct"
    description = "denoiser trained on the attacker's released data: noise2noise (black box) or noise2clean (white box)"
    defaults = {"target": "noise2noise", "samples": 1024, "epochs": 10, "width": 32, "depth": 4, "lr": 1e-3}

    def fit(self, view, seed):
        target = self.params["target"]
        if target not in TARGETS:
            raise UserError(f"attack 'reconstruct': unknown target {target!r}; valid choices: {', '.join(TARGETS)}")
        if int(self.params["depth"]) < 2:
            raise UserError(f"attack 'reconstruct': depth must be >= 2, got {self.params['depth']!r}")
        clean = view.clean(self.params["samples"])
        noisy = view.released_split(clean, 0)  # read (encoded) batch by batch while training
        goal = view.released_split(clean, 1) if target == "noise2noise" else clean
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            net = ResidualDenoiser(clean.shape[0], int(self.params["width"]), int(self.params["depth"]))
        losses: list[float] = []

        def loss(m, x, y):
            value = F.mse_loss(m(x), y)
            losses.append(float(value.detach()))
            return value

        self.net = train_module(net, loss, noisy, goal, self.params["epochs"], self.params["lr"], seed)
        return {"train_mse": sum(losses[-8:]) / max(1, len(losses[-8:])), "samples": len(clean.labels)}

    @torch.no_grad()
    def __call__(self, x, seed):
        return torch.cat([self.net(x[i : i + 256]) for i in range(0, len(x), 256)])
