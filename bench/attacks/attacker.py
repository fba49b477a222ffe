"""What a learning attacker sees: `AttackerView`.

The attacker holds a seeded sample of the suite's training split (the defender's data, never
the test images) and receives it as the defense releases it: same defense, authorized model,
strength and release format. `released(clean, draw)` is an independent release per `draw`:
draw 0 uses the job's own seed (for a per-client code, the attacker's data carries the same
code as the test data), draw 1 a fresh seed (a second encoding of the same images, as Noise2Noise
and the pairs projection need). A white-box attacker also knows the method and the authorized
model's first layer, so it can draw recoding directions of its own (`whitebox_directions`).

`released_split(clean, draw)` is the same release as a lazy `Split`: its batches are encoded when
read (per-sample encodings do not depend on the batch), so an attack that trains for several
epochs reads its data in batches instead of holding every release at once.

The protocol that runs the attack builds the view from three functions, so the view (and every
attack) depends on no protocol:
    encode(split, seed) -> released images of `split` (pixel space, CPU)
    to_space(images) -> the images in the space the defense encodes in
    directions(split, seed) -> recoding directions for `split` (white box), or None for no defense
"""

from __future__ import annotations

from typing import Callable

import torch

from bench.data.base import Split

DRAW_STRIDE = 100_003  # seed offset between independent releases of the attacker's data
WHITEBOX_DRAW = 7


class AttackerView:
    def __init__(self, *, train: Split, seed: int, encode: Callable[[Split, int], torch.Tensor],
                 to_space: Callable[[torch.Tensor], torch.Tensor],
                 directions: Callable[[Split, int], torch.Tensor] | None):
        self._train, self._seed = train, seed
        self._encode, self._to_space, self._directions = encode, to_space, directions
        self._memo: dict = {}

    def clean(self, samples: int) -> Split:
        """A seeded sample of the attacker's clean images and labels, in the space the defense encodes in."""
        key = ("clean", int(samples))
        if key not in self._memo:
            split = self._train.subset(int(samples), self._seed)
            images = self._to_space(split.images)
            self._memo[key] = Split(split.name, images, split.labels, split.indices, split.num_classes)
            self._memo[("stored", split.identity["indices"])] = split
        return self._memo[key]

    def released(self, clean: Split, draw: int = 0) -> torch.Tensor:
        """`clean` (from `clean()`) as the defense releases it; each `draw` is an independent release."""
        key = ("released", clean.identity["indices"], draw)
        if key not in self._memo:
            stored = self._memo.get(("stored", clean.identity["indices"]), clean)  # as stored, before the encode space
            self._memo[key] = self._encode(stored, self._seed + DRAW_STRIDE * draw)
        return self._memo[key]

    def released_split(self, clean: Split, draw: int = 0) -> Split:
        """`released(clean, draw)` as a lazy Split (labels and indices of `clean`), encoded batch by batch."""
        stored = self._memo.get(("stored", clean.identity["indices"]), clean)
        seed = self._seed + DRAW_STRIDE * draw

        def read(positions) -> torch.Tensor:
            return self._encode(stored.take(positions), seed)

        return Split(f"{clean.name}[released:{draw}]", None, clean.labels, clean.indices, clean.num_classes, reader=read)

    def self_released_split(self, clean: Split, draws: int, first: int = WHITEBOX_DRAW + 1) -> Split:
        """`clean` released `draws` times, by the attacker itself (white-box access to the authorized model:
        it knows the method and the model, so it recodes its own images at the job's strength, with seeds
        of its own, draws first, first+1, ...): a lazy Split of draws * len(clean) samples, draw-major."""
        stored = self._memo.get(("stored", clean.identity["indices"]), clean)
        n, draws = len(clean.labels), int(draws)

        def read(positions) -> torch.Tensor:
            positions = torch.as_tensor(positions, dtype=torch.long)
            out = None
            for d in sorted(set((positions // n).tolist())):
                rows = (positions // n == d).nonzero().flatten()
                part = self._encode(stored.take((positions[rows] % n).numpy()), self._seed + DRAW_STRIDE * (first + d))
                out = torch.empty(len(positions), *part.shape[1:], dtype=part.dtype) if out is None else out
                out[rows] = part
            return out

        return Split(f"{clean.name}[self-released:{draws}]", None, clean.labels.repeat(draws),
                     list(clean.indices) * draws, clean.num_classes, reader=read)

    def whitebox_directions(self, clean: Split) -> torch.Tensor:
        """Recoding directions drawn with the attacker's own seed (knows the method and the model)."""
        if self._directions is None:
            return torch.zeros_like(clean.images)
        return self._directions(clean, self._seed + WHITEBOX_DRAW * DRAW_STRIDE)
