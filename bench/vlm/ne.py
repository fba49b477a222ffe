"""NE for VLM images in the authorized vision tower's patch-embedding space (NE Table 4, App. D.3).

An image is resized to the authorized model's canvas (bench.vlm.profiles), recoded there with
bench.defenses.ne.NEPatch on the patch embedding (one patch per 14x14 cell, normalization folded
in), scaled to a true pixel-space PSNR and released as an 8-bit PNG (bench.defenses.release).
`dims` (count or fraction of the 588 patch inputs) picks the lowest-gain directions; dims = 0
uses the tau rule instead (real InternVL3/Qwen2.5-VL patch embeddings have no exact nullspace).
Every model then runs its own preprocessing on that PNG, as deployed.
"""

from __future__ import annotations

import time
from types import SimpleNamespace

import numpy as np
import torch
from PIL import Image

from bench.defenses.ne import NEPatch
from bench.defenses.release import calibrate
from bench.core.registry import check_params
from bench.vlm.patch_embed import patch_first_linear
from bench.vlm.profiles import Profile


def to_tensor(image: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.asarray(image.convert("RGB"), dtype=np.float64) / 255.0).permute(2, 0, 1).unsqueeze(0)


def to_image(x: torch.Tensor) -> Image.Image:
    arr = (x[0].permute(1, 2, 0).clamp(0, 1) * 255.0).round().to(torch.uint8).numpy()
    return Image.fromarray(arr)


def on_canvas(image: Image.Image, profile: Profile) -> torch.Tensor:
    h, w = profile.canvas(image.height, image.width)
    return to_tensor(image.convert("RGB").resize((w, h), Image.BICUBIC))


class VLMNE:
    name = "ne-vlm"
    defaults = {"dims": 1 / 12, "tau": 1e-4, "rule": "threshold", "min_dims": 1, "code": "instance", "psnr": 30.0}

    def __init__(self, **params):
        check_params("defense", self.name, self.defaults, params)  # names and types, as every plugin's
        self.params = {**self.defaults, **params}
        self._fitted: dict[tuple[int, int], tuple] = {}

    def fit(self, module: torch.nn.Module, profile: Profile) -> None:
        self._module, self._profile = module, profile

    def _for_canvas(self, hw: tuple[int, int]):
        if hw not in self._fitted:
            fl = patch_first_linear(self._module, hw, self._profile.std)
            ne = NEPatch(**{k: self.params[k] for k in ("tau", "rule", "dims", "min_dims", "code")})
            ne.fit(SimpleNamespace(first_linear=lambda: fl))
            self._fitted[hw] = (fl, ne)
        return self._fitted[hw]

    def encode(self, image: Image.Image, index: int, seed: int) -> tuple[Image.Image, dict]:
        """The released 8-bit image (authorized canvas size) and its stats (PSNR, authorized deviation)."""
        start = time.perf_counter()
        x = on_canvas(image, self._profile)
        fl, ne = self._for_canvas(tuple(x.shape[-2:]))
        cal = calibrate(x, ne.directions(None, [index], [0], seed), self.params["psnr"], "uint8")
        dev = float(fl.relative_deviation(x, cal.released)[0])
        return to_image(cal.released), {"psnr_true": float(cal.psnr_true[0]), "auth_dev": dev,
                                        "subspace_dim": ne.summary()["subspace_dim"],
                                        "encode_ms": (time.perf_counter() - start) * 1e3}


def patch_deviation(module: torch.nn.Module, profile: Profile, clean: Image.Image, released: Image.Image) -> float:
    """||W(P(released)) - W(P(clean))|| / ||W(P(clean))|| with the model's own canvas P and patch embedding W."""
    x = on_canvas(clean, profile)
    h, w = x.shape[-2:]
    y = to_tensor(released.convert("RGB").resize((w, h), Image.BICUBIC)) if released.size != (w, h) else to_tensor(released)
    fl = patch_first_linear(module, (h, w), profile.std)
    return float(fl.relative_deviation(x, y)[0])
