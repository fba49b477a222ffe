"""An independent re-implementation of the public NE code's pipeline for a Conv2d first layer, written
from reading `model-specific/non-transferable-examples` (src/nte/nes.py, src/nte/cli.py), not from the
harness: the reference the NE comparison tests (tests/test_ne_real_compare.py) hold the harness against.

The code's steps, for one model and a batch of images already through the model's own processor
(the normalized tensor xn = (x - mean) / std):
1. basis: SVD of the RAW first-layer weight reshaped (c_out, c_in*kh*kw); rank = c_out when the layer has
   more inputs than outputs (tau ignored), else the count of singular values > tau; the basis is the
   right-singular vectors past the rank (the last one alone when that leaves none).
2. codes: z of shape (B, k, 1) - ONE k-vector per image, the same for every patch position ("tiled").
3. scale: sqrt(255^2 / 10^(dB/10) / mean((P + V z1)^2)) per image, P the unfolded normalized patches
   (the mean square of the noised SIGNAL, not of the noise), then a FRESH z2: noise = V (z2 * scale).
4. the image fed to a model: fold(P + noise) - F.fold sums overlapping patches, so where patches overlap
   the image itself is summed too (each pixel times the number of patches covering it), not only the noise.

Only torch is used; the random draws come from a caller's generator so tests can align them.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


def code_null_basis(weight: torch.Tensor, tau: float) -> torch.Tensor:
    """Step 1: the (n, k) basis the public code perturbs in, from the raw conv weight (c_out, c_in, kh, kw)."""
    w = weight.detach().reshape(weight.shape[0], -1).to(torch.float64)
    _, s, vh = torch.linalg.svd(w, full_matrices=True)
    rank = s.numel() if vh.shape[0] > s.numel() else int((s > tau).sum())
    basis = vh[rank:].T
    return basis if basis.shape[1] else vh[-1:].T


@dataclass(frozen=True, kw_only=True)
class CodeOutput:
    fed: torch.Tensor  # fold(P + noise): what the code feeds a model through F.fold (normalized domain)
    intended: torch.Tensor  # xn + fold(noise): the clean image plus the folded perturbation (normalized)
    noise: torch.Tensor  # (B, n, L) the scaled per-patch noise V (z2 * scale)
    scale: torch.Tensor  # (B,) the code's per-image scale


def code_release(xn: torch.Tensor, basis: torch.Tensor, target_db: float, kernel, stride, padding,
                 generator: torch.Generator | None = None, codes: tuple[torch.Tensor, torch.Tensor] | None = None
                 ) -> CodeOutput:
    """Steps 2-4 on a normalized batch xn (B, C, H, W); the two draws z1, z2 (B, k, 1) come from `generator`
    (in the code's order) or are given as `codes` (to align them with another implementation's draws)."""
    xn = xn.to(torch.float64)
    kw = dict(kernel_size=kernel, stride=stride, padding=padding)
    patches = F.unfold(xn, **kw)
    k = basis.shape[1]
    if codes is None:
        z1 = torch.randn(len(xn), k, 1, generator=generator, dtype=torch.float64)
        z2 = torch.randn(len(xn), k, 1, generator=generator, dtype=torch.float64)
    else:
        z1, z2 = (z.to(torch.float64).reshape(len(xn), k, 1) for z in codes)
    first = basis @ z1  # (B, n, 1): broadcast over every position
    ms = ((patches + first) ** 2).mean(dim=(1, 2))
    scale = torch.sqrt((255.0**2 / 10 ** (target_db / 10)) / ms)
    noise = (basis @ (z2 * scale.view(-1, 1, 1))).expand_as(patches)
    size = xn.shape[-2:]
    fed = F.fold(patches + noise, size, **kw)
    intended = xn + F.fold(noise.contiguous(), size, **kw)
    return CodeOutput(fed=fed, intended=intended, noise=noise, scale=scale)


def overlap_count(shape, kernel, stride, padding) -> torch.Tensor:
    """How many patches cover each pixel (1 everywhere for a non-overlapping, unpadded tiling)."""
    ones = torch.ones(1, *shape, dtype=torch.float64)
    kw = dict(kernel_size=kernel, stride=stride, padding=padding)
    return F.fold(F.unfold(ones, **kw), shape[-2:], **kw)[0]


def subspace_energy(delta: torch.Tensor, basis: torch.Tensor, kernel, stride, padding) -> torch.Tensor:
    """Per sample, the fraction of the unfolded perturbation's energy inside span(basis):
    ||B B^T unfold(delta)||^2 / ||unfold(delta)||^2 (1 = every patch of the release is in the subspace)."""
    cols = F.unfold(delta.to(torch.float64), kernel_size=kernel, stride=stride, padding=padding)
    q = torch.linalg.qr(basis.to(torch.float64)).Q
    inside = (q.T @ cols).pow(2).sum(dim=(1, 2))
    return inside / cols.pow(2).sum(dim=(1, 2)).clamp_min(1e-300)


def principal_gap(a: torch.Tensor, b: torch.Tensor) -> float:
    """Spectral norm of the difference of the orthogonal projectors onto span(a) and span(b) (0: same subspace)."""
    qa, qb = torch.linalg.qr(a.to(torch.float64)).Q, torch.linalg.qr(b.to(torch.float64)).Q
    if qa.shape[1] != qb.shape[1]:
        return 1.0
    return float(torch.linalg.matrix_norm(qa @ qa.T - qb @ qb.T, ord=2))
