"""Per-family image preprocessing facts: the canvas an image is resized to and the normalization.

- internvl: the grid of 448x448 tiles InternVL's dynamic preprocessing picks for the image (closest
  aspect ratio with at most `max_num` tiles, 6 for MMBench in VLMEvalKit), ImageNet mean/std. An
  image already at that grid size is cut into the same tiles without resampling; only the extra
  thumbnail InternVL adds when there is more than one tile is a resampled view.
- qwen2.5-vl: smart resize to multiples of 28 (14-px patches, 2x2 merge) within min/max pixels
  (VLMEvalKit's Qwen2.5-VL setting: 1280 to 16384 28x28 cells), OpenAI-CLIP mean/std; an image
  already at that size is not resized again.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from bench.core.errors import UserError

IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
CLIP = ((0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711))


@dataclass(frozen=True)
class Profile:
    family: str
    mean: tuple[float, ...]
    std: tuple[float, ...]
    tile: int = 448  # InternVL tile side
    max_num: int = 6  # InternVL tiles per image
    factor: int = 28  # smart-resize multiple
    min_pixels: int = 1280 * 28 * 28
    max_pixels: int = 16384 * 28 * 28

    def _tile_grid(self, height: int, width: int) -> tuple[int, int]:
        """(columns, rows) as InternVL's find_closest_aspect_ratio chooses them."""
        ratios = sorted({(i, j) for i in range(1, self.max_num + 1) for j in range(1, self.max_num + 1)
                         if i * j <= self.max_num}, key=lambda r: r[0] * r[1])
        aspect, best, best_diff = width / height, (1, 1), float("inf")
        for r in ratios:
            diff = abs(aspect - r[0] / r[1])
            if diff < best_diff:
                best, best_diff = r, diff
            elif diff == best_diff and width * height > 0.5 * self.tile * self.tile * r[0] * r[1]:
                best = r
        return best

    def canvas(self, height: int, width: int) -> tuple[int, int]:
        if self.family == "internvl":
            cols, rows = self._tile_grid(height, width)
            return self.tile * rows, self.tile * cols
        f = self.factor
        h, w = max(f, round(height / f) * f), max(f, round(width / f) * f)
        if h * w > self.max_pixels:
            beta = math.sqrt(height * width / self.max_pixels)
            h, w = max(f, math.floor(height / beta / f) * f), max(f, math.floor(width / beta / f) * f)
        elif h * w < self.min_pixels:
            beta = math.sqrt(self.min_pixels / (height * width))
            h, w = math.ceil(height * beta / f) * f, math.ceil(width * beta / f) * f
        return h, w


def profile_for(spec: dict) -> Profile:
    """From a model spec: family = "internvl" | "qwen2.5-vl" (guessed from the name when absent), overrides."""
    family = spec.get("family") or ("internvl" if "internvl" in spec["name"].lower() else
                                    "qwen2.5-vl" if "qwen" in spec["name"].lower() else None)
    if family not in ("internvl", "qwen2.5-vl"):
        raise UserError(f"model {spec['name']!r}: set family = \"internvl\" or \"qwen2.5-vl\" for its preprocessing")
    mean, std = IMAGENET if family == "internvl" else CLIP
    keys = ("tile", "max_num", "factor", "min_pixels", "max_pixels")
    return Profile(family, tuple(spec.get("mean", mean)), tuple(spec.get("std", std)),
                   **{k: int(spec[k]) for k in keys if k in spec})
