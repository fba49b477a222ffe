"""Low-gain directions of a whole first-layer operator A (all positions, padding included).

`low_gain_basis(fl, k, backend)` returns the k input directions with the smallest
singular values of A (eigenvectors of A^T A). Backends:
- "dense": A^T A built explicitly and diagonalised (exact; inputs up to a few thousand dims);
- "fourier": block-diagonalisation of a strided convolution in the Fourier domain
  (bench.defenses.operator_fourier), for 224x224-scale inputs;
- "auto": dense up to DENSE_MAX_DIM input dims, fourier above.

Both keep the fitted basis on the CPU and a copy per device they are used on (`PerDevice`);
`combine_batch(z)` turns a batch of codes (B, k), on any device, into directions there.
"""

from __future__ import annotations

import math

import torch

from bench.defenses.batched import PerDevice, one_thread, rows_matmul
from bench.defenses.operator_fourier import FourierBasis
from bench.core.errors import UserError
from bench.models.first_linear import FirstLinear

DENSE_MAX_DIM = 4096
BACKENDS = ("auto", "dense", "fourier")


class DenseBasis:
    """Exact eigenvectors of A^T A, smallest first."""

    def __init__(self, fl: FirstLinear, k: int):
        c, h, w = fl.input_shape
        n = c * h * w
        eye = torch.eye(n, dtype=torch.float64)
        a_t = torch.cat([fl.apply(eye[i : i + 512].reshape(-1, c, h, w)) for i in range(0, n, 512)])  # (n, m)
        with one_thread():  # LAPACK's basis of a degenerate eigenspace depends on the thread count
            evals, evecs = torch.linalg.eigh(a_t @ a_t.T)
        gains = evals.clamp_min(0).sqrt()
        self.shape = (c, h, w)
        self.vectors = evecs[:, :k]
        self.gains = gains[:k]
        self.top_gain = float(gains[-1])
        self._state = PerDevice(vectors_t=self.vectors.T.contiguous())

    @property
    def dim(self) -> int:
        return self.vectors.shape[1]

    def sample(self, gen: torch.Generator) -> torch.Tensor:
        """One standard Gaussian draw in the k-dim subspace, (C, H, W) float64."""
        return self.combine_batch(torch.randn(1, self.dim, generator=gen, dtype=torch.float64))[0]

    def combine_batch(self, z: torch.Tensor) -> torch.Tensor:
        """sum_i z[b, i] v_i for each row b of the codes z (B, k), on z's device: (B, C, H, W) float64."""
        vt = self._state.on(z.device)["vectors_t"]
        return rows_matmul(z.to(torch.float64), vt).view(len(z), *self.shape)


def resolve_dims(dims: float, n: int) -> int:
    """An int >= 1 is a count; a float in (0, 1) is a fraction of the n input dims."""
    k = int(dims) if dims >= 1 else math.ceil(dims * n)
    if not 1 <= k <= n:
        raise UserError(f"dims={dims} selects {k} of {n} directions; give a count in [1, {n}] or a fraction in (0, 1)")
    return k


def low_gain_basis(fl: FirstLinear, k: int, backend: str = "auto"):
    if backend not in BACKENDS:
        raise UserError(f"unknown operator backend {backend!r}; valid choices: {', '.join(BACKENDS)}")
    n = math.prod(fl.input_shape)
    if backend == "dense" or (backend == "auto" and n <= DENSE_MAX_DIM):
        return DenseBasis(fl, k)

    return FourierBasis(fl, k)
