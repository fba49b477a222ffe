"""Non-Transferable Examples (NE): recode inputs inside the authorized model's insensitive subspace.

Two variants (see the NE paper, Sec. 3, and the design notes in README):
- `ne-patch` (the paper's): SVD of the first linear map W per patch (Linear: the whole
  input; Conv2d: one unfolded patch), tau-insensitive subspace (Definition 1, or the
  practical threshold s_i <= tau of Sec. 5.1), delta = V z per patch folded back to the
  image. Exact nullspace only where W has more inputs than outputs and patches do not
  overlap; for overlapping convolutions the folded sum leaves the subspace (measured).
- `ne-operator`: the k smallest singular directions of the whole first-layer operator
  (all patch positions and padding at once), which overlapping stems do have.
"""

from __future__ import annotations

import time

import torch

from bench.defenses.base import InputDefense
from bench.defenses.operator_basis import low_gain_basis, resolve_dims
from bench.errors import UserError

RULES = ("threshold", "cumulative")
LAYOUTS = ("independent", "tiled")


class NEPatch(InputDefense):
    name = "ne-patch"
    description = "Non-Transferable Examples, per-patch SVD of the first linear map (paper)"
    defaults = {"tau": 1e-4, "rule": "threshold", "dims": 0, "min_dims": 1, "layout": "independent", "code": "instance"}

    def __init__(self, **params):
        super().__init__(**params)
        if self.params["rule"] not in RULES:
            raise UserError(f"unknown rule {self.params['rule']!r}; valid choices: {', '.join(RULES)}")
        if self.params["layout"] not in LAYOUTS:
            raise UserError(f"unknown layout {self.params['layout']!r}; valid choices: {', '.join(LAYOUTS)}")

    def fit(self, authorized, probe=None) -> None:
        start = time.perf_counter()
        fl = authorized.first_linear()
        w = fl.matrix.to(torch.float64)
        _, s, vh = torch.linalg.svd(w, full_matrices=True)
        n = w.shape[1]
        sv = torch.zeros(n, dtype=torch.float64)
        sv[: s.numel()] = s
        order = torch.argsort(sv)
        sv, v = sv[order], vh.T[:, order]
        if self.params["dims"]:
            k_tau = resolve_dims(self.params["dims"], n)
        elif self.params["rule"] == "threshold":
            k_tau = int((sv <= self.params["tau"]).sum())
        else:
            k_tau = int((torch.cumsum(sv, 0) <= self.params["tau"]).sum())
        k = max(k_tau, int(self.params["min_dims"]))
        self._fl, self._basis = fl, v[:, :k]
        self._positions = fl.unfold(torch.zeros(1, *fl.input_shape, dtype=torch.float64)).shape[-1]
        self._summary = {
            "subspace_dim": k,
            "tau_dim": k_tau,
            "fallback": k_tau < k,
            "patch_dim": n,
            "positions": self._positions,
            "non_overlapping": fl.non_overlapping,
            "max_gain": float(sv[k - 1]),
            "fit_ms": (time.perf_counter() - start) * 1e3,
        }

    def directions(self, x, indices, labels, seed):
        k = self._basis.shape[1]
        cols = []
        for i, y in zip(indices, labels):
            gen = self.code_generator(seed, int(i), int(y))
            if self.params["layout"] == "tiled":
                z = torch.randn(k, 1, generator=gen, dtype=torch.float64).expand(k, self._positions)
            else:
                z = torch.randn(k, self._positions, generator=gen, dtype=torch.float64)
            cols.append(self._basis @ z)
        return self._fl.fold(torch.stack(cols))

    def summary(self) -> dict:
        return dict(self._summary)


class NEOperator(InputDefense):
    name = "ne-operator"
    description = "Non-Transferable Examples, smallest singular directions of the whole first-layer operator"
    defaults = {"dims": 1 / 12, "backend": "auto", "code": "instance"}

    def fit(self, authorized, probe=None) -> None:
        start = time.perf_counter()
        fl = authorized.first_linear()
        c, h, w = fl.input_shape
        k = resolve_dims(self.params["dims"], c * h * w)
        self._basis = low_gain_basis(fl, k, self.params["backend"])
        self._summary = {
            "subspace_dim": k,
            "backend": type(self._basis).__name__,
            "max_gain_rel": float(self._basis.gains[-1]) / max(self._basis.top_gain, 1e-30),
            "fit_ms": (time.perf_counter() - start) * 1e3,
        }

    def directions(self, x, indices, labels, seed):
        return torch.stack([self._basis.sample(self.code_generator(seed, int(i), int(y))) for i, y in zip(indices, labels)])

    def summary(self) -> dict:
        return dict(self._summary)
