"""Reconstruction attack (NE paper Table 8): a denoiser trained on the attacker's released data.

`target = "noise2noise"` (Table 8's "black box" column): pairs of two independent releases of the
same images. `target = "noise2clean"` (its "white box" column): released -> clean pairs.
`access = "released"` (Table 8's rows 1-2): the attacker trains on the releases the defender gave it.
`access = "whitebox"` (Table 8's row 3, "attacker has the white box access to the model"): knowing
the method and the authorized model, it recodes its own images itself, `draws` independent releases
of each with seeds of its own (AttackerView.self_released_split), and trains on all of them.
`net = "dncnn"` (default): a small residual CNN (conv-ReLU layers predicting the perturbation,
subtracted from the input, `width` x `depth`). `net = "srresnet"`: the paper's SR-ResNet (residual
blocks conv-BN-PReLU-conv-BN with a long skip, Ledig et al. 2017's generator without its upsampler,
as a denoiser keeps the size; `blocks` x `width`, 16 x 64 in SR-ResNet). Trained with MSE. The
attacked data is the denoiser's output on the released test images; the runner records its PSNR
against the clean images beside the released PSNR.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from bench.attacks.attacker import WHITEBOX_DRAW
from bench.attacks.base import ATTACKS, LearnedAttack
from bench.attacks.model_attacks import train_module
from bench.data.base import Split
from bench.errors import UserError
from bench.models.adapter import run_device


def view_next_draw(draws: int) -> int:
    """The first seed draw of a white-box attacker's second set of own releases (after its first `draws`)."""
    return WHITEBOX_DRAW + 1 + int(draws)

TARGETS = ("noise2noise", "noise2clean")
NETS = ("dncnn", "srresnet")
ACCESS = ("released", "whitebox")


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


class ResidualBlock(nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(width, width, 3, padding=1), nn.BatchNorm2d(width), nn.PReLU(),
                                  nn.Conv2d(width, width, 3, padding=1), nn.BatchNorm2d(width))

    def forward(self, x):
        return x + self.body(x)


class SRResNet(nn.Module):
    """SR-ResNet's generator at scale 1: 9x9 conv + PReLU, `blocks` residual blocks, 3x3 conv + BN with a
    skip from the head, 9x9 conv back to the image."""

    def __init__(self, channels: int, width: int, blocks: int):
        super().__init__()
        self.head = nn.Sequential(nn.Conv2d(channels, width, 9, padding=4), nn.PReLU())
        self.blocks = nn.Sequential(*[ResidualBlock(width) for _ in range(blocks)])
        self.neck = nn.Sequential(nn.Conv2d(width, width, 3, padding=1), nn.BatchNorm2d(width))
        self.tail = nn.Conv2d(width, channels, 9, padding=4)

    def forward(self, x):
        h = self.head(x)
        return self.tail(h + self.neck(self.blocks(h)))


@ATTACKS.register
class Reconstruct(LearnedAttack):
    name = "reconstruct"
    description = "denoiser trained on the attacker's released data: noise2noise (black box) or noise2clean (white box)"
    defaults = {"target": "noise2noise", "samples": 1024, "epochs": 10, "width": 32, "depth": 4, "lr": 1e-3,
                "net": "dncnn", "blocks": 16, "access": "released", "draws": 4}

    def _net(self, channels: int) -> nn.Module:
        if self.params["net"] == "srresnet":
            return SRResNet(channels, int(self.params["width"]), int(self.params["blocks"]))
        return ResidualDenoiser(channels, int(self.params["width"]), int(self.params["depth"]))

    def _pairs(self, view, clean):
        """(inputs, goals) to train on: the defender's releases, or the attacker's own (white box)."""
        noise2noise = self.params["target"] == "noise2noise"
        if self.params["access"] == "released":
            return view.released_split(clean, 0), view.released_split(clean, 1) if noise2noise else clean
        draws = int(self.params["draws"])
        inputs = view.self_released_split(clean, draws)
        if noise2noise:  # each own release paired with another own release of the same image
            return inputs, view.self_released_split(clean, draws, first=view_next_draw(draws))
        repeat = torch.cat([clean.images] * draws)
        return inputs, Split(f"{clean.name}[clean x{draws}]", repeat, clean.labels.repeat(draws),
                             list(clean.indices) * draws, clean.num_classes)

    def fit(self, view, seed):
        target = self.params["target"]
        if target not in TARGETS:
            raise UserError(f"attack 'reconstruct': unknown target {target!r}; valid choices: {', '.join(TARGETS)}")
        if int(self.params["depth"]) < 2:
            raise UserError(f"attack 'reconstruct': depth must be >= 2, got {self.params['depth']!r}")
        for key, valid in (("net", NETS), ("access", ACCESS)):
            if self.params[key] not in valid:
                raise UserError(f"attack 'reconstruct': unknown {key} {self.params[key]!r}; valid choices: {', '.join(valid)}")
        if int(self.params["draws"]) < 1 or int(self.params["blocks"]) < 1:
            raise UserError("attack 'reconstruct': draws and blocks must be >= 1")
        clean = view.clean(self.params["samples"])
        noisy, goal = self._pairs(view, clean)  # read (encoded) batch by batch while training
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            net = self._net(clean.shape[0]).to(run_device())  # trains on the run's device
        losses: list[float] = []

        def loss(m, x, y):
            value = F.mse_loss(m(x), y)
            losses.append(float(value.detach()))
            return value

        self.net = train_module(net, loss, noisy, goal, self.params["epochs"], self.params["lr"], seed)
        return {"train_mse": sum(losses[-8:]) / max(1, len(losses[-8:])), "samples": len(clean.labels),
                "train_pairs": len(goal)}

    @torch.no_grad()
    def __call__(self, x, seed):
        self.net.eval()
        where = next(self.net.parameters()).device
        return torch.cat([self.net(x[i : i + 256].to(where)).to(x.device) for i in range(0, len(x), 256)])
