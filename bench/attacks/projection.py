"""Method-aware projection attack (NE paper, Appendix E's limitation; no paper measures it).

The attacker estimates the recoding subspace span(U) from its own released data and replaces the
released test images' component in it (where the recoding lives, together with part of the image):
- `fill = "mean"`: by the mean of its released data, x' = x - U U^T (x - mu);
- `fill = "regress"` (the attacker also has clean images of its own): by a ridge regression of the
  clean component U^T x_clean on the part outside the subspace, which the recoding leaves intact.
Estimates of U (top principal directions of `d`):
- "pairs" (black box): d = two independent releases of the same images, subtracted
  (the images cancel, the recodings remain);
- "residual" (black box, one release): d = release minus its Gaussian-blurred self;
- "whitebox": d = recoding directions the attacker draws itself, knowing the method and the
  authorized model's first layer (e.g. a public checkpoint).
The rank is the smallest reaching `energy` of d's spectrum, at most `max_rank` x dimension.
`patch = p > 0` estimates one subspace for every non-overlapping p x p patch (scales to
large images); 0 treats the whole image as one vector.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from bench.attacks.base import ATTACKS, LearnedAttack
from bench.attacks.preprocessing import gaussian_blur
from bench.errors import UserError

ESTIMATES = ("pairs", "residual", "whitebox")
FILLS = ("mean", "regress")


@ATTACKS.register
class Project(LearnedAttack):
    name = "project"
    description = "estimate the recoding subspace from released data (PCA) and project it out (method-aware)"
    defaults = {"estimate": "pairs", "fill": "mean", "samples": 1024, "energy": 0.99, "max_rank": 1.0, "patch": 0,
                "ridge": 1e-2}

    def _vectors(self, x: torch.Tensor) -> torch.Tensor:
        p = int(self.params["patch"])
        if p <= 0:
            return x.flatten(1)
        if x.shape[-1] % p or x.shape[-2] % p:
            raise UserError(f"attack 'project': patch {p} does not divide the image size {tuple(x.shape[-2:])}")
        return F.unfold(x, p, stride=p).transpose(1, 2).reshape(-1, x.shape[1] * p * p)

    def _images(self, v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        p = int(self.params["patch"])
        if p <= 0:
            return v.reshape(like.shape)
        n, c, h, w = like.shape
        cols = v.reshape(n, -1, c * p * p).transpose(1, 2)
        return F.fold(cols, (h, w), p, stride=p)

    def fit(self, view, seed):
        estimate = self.params["estimate"]
        if estimate not in ESTIMATES:
            raise UserError(f"attack 'project': unknown estimate {estimate!r}; valid choices: {', '.join(ESTIMATES)}")
        if self.params["fill"] not in FILLS:
            raise UserError(f"attack 'project': unknown fill {self.params['fill']!r}; valid choices: {', '.join(FILLS)}")
        clean = view.clean(self.params["samples"])
        first = view.released(clean, 0)
        if estimate == "pairs":
            d = first - view.released(clean, 1)
        elif estimate == "residual":
            d = first - gaussian_blur(first, 1.0)
        else:
            d = view.whitebox_directions(clean)
        vectors = self._vectors(d.double())
        _, s, vh = torch.linalg.svd(vectors, full_matrices=False)
        energy = (s**2).cumsum(0) / (s**2).sum().clamp_min(1e-300)
        cap = max(1, int(float(self.params["max_rank"]) * vectors.shape[1]))
        rank = min(int((energy < float(self.params["energy"])).sum()) + 1, cap, len(s))
        self.basis = vh[:rank].T.float()
        self.mean = self._vectors(first).mean(0)
        self.regression = None
        if self.params["fill"] == "regress":
            outside = self._outside(self._vectors(first))
            features = torch.cat([outside, torch.ones(len(outside), 1)], 1).double()
            target = (self._vectors(clean.images) @ self.basis).double()
            gram = features.T @ features
            gram += float(self.params["ridge"]) * gram.diagonal().mean() * torch.eye(len(gram), dtype=gram.dtype)
            self.regression = torch.linalg.solve(gram, features.T @ target).float()
        return {"rank": rank, "dim": int(vectors.shape[1]), "estimate": estimate}

    def _outside(self, v: torch.Tensor) -> torch.Tensor:
        return v - (v @ self.basis) @ self.basis.T

    def __call__(self, x, seed):
        v = self._vectors(x)
        outside = self._outside(v)
        if self.regression is None:
            coeffs = (self.mean @ self.basis).expand(len(v), -1)
        else:
            coeffs = torch.cat([outside, torch.ones(len(outside), 1)], 1) @ self.regression
        return self._images(outside + coeffs @ self.basis.T, x)
