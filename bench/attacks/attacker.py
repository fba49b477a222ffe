"""What a learning attacker sees, and how an input job applies its attack.

The attacker holds a seeded sample of the suite's training split (the defender's data, never
the test images) and receives it as the defense releases it: same defense, authorized model,
strength and release format. `released(clean, draw)` is an independent release per `draw`:
draw 0 uses the job's own seed (for a per-client code, the attacker's data carries the same
code as the test data), draw 1 a fresh seed (a second encoding of the same images, as Noise2Noise
and the pairs projection need). A white-box attacker also knows the method and the authorized
model's first layer, so it can draw recoding directions of its own (`whitebox_directions`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from bench.attacks import get_attack
from bench.data.base import Split
from bench.defenses.release import psnr
from bench.encode_space import space_input, to_pixels

if TYPE_CHECKING:
    from bench.runner import Job, Runner

DRAW_STRIDE = 100_003  # seed offset between independent releases of the attacker's data


class AttackerView:
    def __init__(self, runner: "Runner", job: "Job", seed: int):
        self._runner, self._job, self._seed = runner, job, seed
        self._memo: dict = {}

    def clean(self, samples: int) -> Split:
        """A seeded sample of the attacker's clean images and labels, in the space the defense encodes in."""
        key = ("clean", int(samples))
        if key not in self._memo:
            split = self._runner.train_data.subset(int(samples), self._seed)
            auth = self._runner.model(self._job.authorized) if self._job.authorized else None
            images = space_input(split.images, auth, self._runner.encode_space)
            self._memo[key] = Split(split.name, images, split.labels, split.indices, split.num_classes)
            self._memo[("stored", split.identity["indices"])] = split
        return self._memo[key]

    def released(self, clean: Split, draw: int = 0) -> torch.Tensor:
        """`clean` (from `clean()`) as the defense releases it; each `draw` is an independent release."""
        key = ("released", clean.identity["indices"], draw)
        if key not in self._memo:
            stored = self._memo.get(("stored", clean.identity["indices"]), clean)  # as stored, before the encode space
            self._memo[key] = self._runner.release(self._job, stored, self._seed + DRAW_STRIDE * draw)[0]
        return self._memo[key]

    def whitebox_directions(self, clean) -> torch.Tensor:
        """Recoding directions drawn with the attacker's own seed (knows the method and the model)."""
        if self._job.defense == "none":
            return torch.zeros_like(clean.images)
        defense = self._runner._defense(self._job)
        dirs = defense.directions(clean.images, clean.indices, clean.labels, self._seed + 7 * DRAW_STRIDE)
        auth = self._runner.model(self._job.authorized) if self._job.authorized else None
        return to_pixels(dirs, clean.images, auth)[0]


def attack_inputs(runner: "Runner", job: "Job", x: torch.Tensor, clean: torch.Tensor, seed: int) -> tuple[torch.Tensor, dict]:
    """Apply the job's input-side attack to the released test data `x`; return it and what to record
    (the learned attack's fit facts, the PSNR of the attacked data against `clean`, its unprotected
    counterpart in the same encode space)."""
    attack = get_attack(job.attack)
    stats: dict = {}
    if attack.kind == "learned":
        stats.update(attack.fit(AttackerView(runner, job, seed), seed))
    if attack.kind in ("input", "learned") and attack.name != "none":
        x = attack(x, seed)
        stats["psnr"] = float(psnr(clean, x).mean())
    return x, stats
