"""NE for text: recode the authorized model's embedding output inside the low-gain subspace of its
first query/key/value projection (NE paper, Sec. 3.2 "Practical Implementation").

Per token, W = [W_q; W_k; W_v] (3d x d) reads the d-dim embedding output e. The basis is the k
right-singular vectors of W with the smallest singular values (bench.defenses.ne.NEPatch with one
patch per token; a stacked 3d x d projection has no exact nullspace, so `dims` picks k). A
released sequence is e + delta, delta = V z per token (z seeded per instance by default), zero
on padding, scaled per sample to the embedding-space SNR `snr_db` = 10 log10(||e||^2 / ||delta||^2)
over the real tokens. W delta is small, so the authorized model's first attention block sees
nearly its clean input; note that the block's residual connection still carries delta itself
(it is not in any nullspace), so the authorized end-to-end change is measured, not assumed.
"""

from __future__ import annotations

import time
from types import SimpleNamespace

import torch

from bench.defenses.ne import NEPatch
from bench.core.registry import check_params
from bench.text.adapter import TextClassifier, as_image, from_image


class TextNE:
    name = "ne-text"
    defaults = {"dims": 1 / 12, "snr_db": 20.0, "code": "instance"}

    def __init__(self, **params):
        check_params("defense", self.name, self.defaults, params)  # names and types, as every plugin's
        self.params = {**self.defaults, **params}
        self._ne = NEPatch(dims=self.params["dims"], code=self.params["code"])

    def fit(self, authorized: TextClassifier) -> None:
        start = time.perf_counter()
        fl = authorized.first_linear()
        self._fl = fl
        self._ne.fit(SimpleNamespace(first_linear=lambda: fl))
        self._summary = {**self._ne.summary(), "w_modules": fl.module_name, "fit_ms": (time.perf_counter() - start) * 1e3}

    def encode(self, h: torch.Tensor, mask: torch.Tensor, indices, labels, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Released sequence e + delta (N, L, d) and its achieved per-sample SNR in dB."""
        delta = from_image(self._ne.directions(None, indices, labels, seed)).to(h.device, h.dtype)
        keep = mask.to(h.device, h.dtype).unsqueeze(-1)
        delta = delta * keep
        signal = (h * keep).flatten(1).pow(2).sum(1)
        power = delta.flatten(1).pow(2).sum(1).clamp_min(1e-30)
        lam = (signal / power * 10 ** (-self.params["snr_db"] / 10)).sqrt()
        delta = delta * lam.view(-1, 1, 1)
        snr = 10 * torch.log10(signal / delta.flatten(1).pow(2).sum(1).clamp_min(1e-30))
        return h + delta, snr.cpu()

    def summary(self) -> dict:
        return dict(self._summary)


def qkv_deviation(model: TextClassifier, clean: torch.Tensor, released: torch.Tensor) -> torch.Tensor:
    """Per-sample ||W(released - clean)|| / ||W clean|| for `model`'s own stacked QKV projection."""
    fl = model.first_linear(clean.shape[1]).to(torch.float32)
    return fl.relative_deviation(as_image(clean.float().cpu()), as_image(released.float().cpu()))
