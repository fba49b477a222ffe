"""Non-Transferable Examples (NE): recode inputs inside the authorized model's insensitive subspace.

Two variants (see the NE paper, Sec. 3, and the design notes in README):
- `ne-patch` (the paper's): SVD of the first linear map W per patch (Linear: the whole
  input; Conv2d: one unfolded patch), tau-insensitive subspace (Definition 1, or the
  practical threshold s_i <= tau of Sec. 5.1), delta = V z per patch folded back to the
  image. Exact nullspace only where W has more inputs than outputs and patches do not
  overlap; for overlapping convolutions the folded sum leaves the subspace (measured).
- `ne-operator`: the k smallest singular directions of the whole first-layer operator
  (all patch positions and padding at once), which overlapping stems do have.

`directions` is batched and follows the batch's device: the codes z are drawn per sample on the
CPU (the same generator calls as a per-sample loop), moved to the device once per group, and
mapped through the basis (kept on the CPU, a copy cached per device) and the fold there.
"""

from __future__ import annotations

import math
import time

import torch

from bench.defenses.base import DEFENSES, InputDefense
from bench.defenses.batched import PerDevice, rows_matmul
from bench.defenses.operator_basis import low_gain_basis, resolve_dims
from bench.core.errors import UserError

RULES = ("threshold", "cumulative")
LAYOUTS = ("independent", "tiled")


@DEFENSES.register
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
        self._normalized: dict = {}
        self._state = PerDevice(basis=self._basis.contiguous(), basis_t=self._basis.T.contiguous())
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
        """delta = fold(V z) per sample; z (k, L) per position ("independent") or (k, 1) tiled."""
        (n, k), positions = self._basis.shape, self._positions
        tiled = self.params["layout"] == "tiled"
        code_shape = (k, 1) if tiled else (k, positions)

        def build(z):  # (G, k, 1 or L) on the device -> (G, C, H, W)
            g, state = len(z), self._state.on(z.device)
            if tiled or positions == 1:  # one k-vector per sample: rows of one fixed-shape product
                cols = rows_matmul(z[:, :, 0], state["basis_t"]).unsqueeze(2).expand(g, n, positions)
            else:  # one (n, k) @ (k, L) product per sample, all of the same shape
                cols = torch.bmm(state["basis"].expand(g, n, k), z)
            return self._fl.fold(cols)

        per_sample = 8 * (k + 2 * n) * positions  # codes, products, folded image (upper bound)
        return self.batched_directions(x, indices, labels, seed, code_shape, self._fl.input_shape, build, per_sample)

    def _normalized_basis(self, std) -> PerDevice:
        """The basis as an orthonormal basis of the same subspace in the processor-normalized patch domain.

        W acts on pixel-space deltas (the std folded in), so a pixel delta d in its low-gain subspace is
        the normalized delta d / std; with one std for every channel the columns stay orthonormal and
        are the basis itself, else they are re-orthonormalised (QR)."""
        key = tuple(float(v) for v in std)
        if key not in self._normalized:
            n, c = self._basis.shape[0], self._fl.input_shape[0]
            per_entry = torch.tensor(key, dtype=torch.float64).expand(c).repeat_interleave(n // c)
            basis = self._basis
            if not bool((per_entry == per_entry[0]).all()):
                basis = torch.linalg.qr(basis / per_entry[:, None]).Q
            self._normalized[key] = PerDevice(basis=basis.contiguous(), basis_t=basis.T.contiguous())
        return self._normalized[key]

    def code_basis(self, std) -> torch.Tensor:
        """The public code's subspace (`nes.py`, `extract_null_space_vectors`), for psnr_mode "paper-code": the
        SVD of the layer's OWN weight (W with the normalization's std taken back out: it acts on the
        processor-normalized tensor) reshaped (outputs, inputs); rank = outputs when the layer has more inputs
        than outputs (tau ignored: the exact nullspace), else the count of singular values > tau; the basis is
        the right-singular vectors past the rank, the last one alone when that leaves none. (n, k) float64,
        orthonormal in the normalized patch domain, in the code's order. `std`: the authorized model's."""
        key = ("code", tuple(float(v) for v in std))
        if key not in self._normalized:
            n, c = self._basis.shape[0], self._fl.input_shape[0]
            per_entry = torch.tensor(key[1], dtype=torch.float64).expand(c).repeat_interleave(n // c)
            w = self._fl.matrix.to(torch.float64) * per_entry  # the layer's own weight
            _, s, vh = torch.linalg.svd(w, full_matrices=True)
            rank = s.numel() if vh.shape[0] > s.numel() else int((s > self.params["tau"]).sum())
            basis = (vh[rank:].T if rank < vh.shape[0] else vh[-1:].T).contiguous()
            self._normalized[key] = PerDevice(basis=basis, basis_t=basis.T.contiguous())
        return self._normalized[key].on(torch.device("cpu"))["basis"]

    def patch_noise(self, x, indices, labels, seed, fl, std):
        """V z per patch before the fold, in the normalized domain: the public code's noise, in the public code's
        subspace (`code_basis`: tau on the layer's own weight), with the codes z tiled or per position, (N, n, L).
        `fl` is the fitted model's first layer or the same layer on another input size (the code unfolds each
        model's own preprocessed image with the authorized layer's kernel); `std` is the authorized model's."""
        n, k = self.code_basis(std).shape
        state = self._normalized[("code", tuple(float(v) for v in std))]
        positions = fl.unfold(torch.zeros(1, *fl.input_shape, dtype=torch.float64)).shape[-1]
        tiled = self.params["layout"] == "tiled"

        def build(z):
            g, on = len(z), state.on(z.device)
            if tiled or positions == 1:
                return rows_matmul(z[:, :, 0], on["basis_t"]).unsqueeze(2).expand(g, n, positions)
            return torch.bmm(on["basis"].expand(g, n, k), z)

        code_shape = (k, 1) if tiled else (k, positions)
        return self.batched_directions(x, indices, labels, seed, code_shape, (n, positions), build,
                                       8 * (k + 2 * n) * positions)

    def code_summary(self, std) -> dict:
        """What psnr_mode "paper-code" perturbs in (`code_basis`), for the row's defense summary."""
        k = self.code_basis(std).shape[1]
        return {"subspace_dim": k, "subspace_rule": "code (tau on the layer's own weight; ignored when inputs > outputs)",
                "harness_subspace_dim": self._summary["subspace_dim"]}

    def summary(self) -> dict:
        return dict(self._summary)


@DEFENSES.register
class NEOperator(InputDefense):
    name = "ne-operator"
    description = "Non-Transferable Examples, smallest singular directions of the whole first-layer operator"
    defaults = {"dims": 1 / 12, "backend": "auto", "code": "instance"}

    @classmethod
    def canonical_params(cls, params, input_size):
        """dims as the count it selects of the input's C*H*W directions (a fraction and its count are one job)."""
        try:
            return {**params, "dims": resolve_dims(params["dims"], math.prod(input_size()))}
        except (UserError, KeyError, TypeError):  # a model that does not load is reported before the first job
            return params

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
        """delta = U z per sample, U the k low-gain directions, z ~ N(0, I_k) from the sample's code."""
        basis = self._basis
        n = math.prod(basis.shape)
        per_sample = 8 * (basis.dim + 6 * n)  # codes and the (complex) spectra or products
        return self.batched_directions(x, indices, labels, seed, (basis.dim,), basis.shape, basis.combine_batch, per_sample)

    def summary(self) -> dict:
        return dict(self._summary)
