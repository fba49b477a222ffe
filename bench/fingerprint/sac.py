"""SAC: sample correlation (Jiyang Guan, Jian Liang and Ran He, "Are You Stealing My Model? Sample Correlation for
Fingerprinting Deep Neural Networks", NeurIPS 2022).

A model is profiled by the correlation matrix of its outputs over a small set of samples; a stolen
copy keeps the source's correlations, an independent model does not. Correlation of two outputs is
their cosine distance mapped to [0, 1]: C_ij = (1 - cos(o_i, o_j)) / 2 (the public code's
`correlation`); the distance between two models is the mean absolute difference of their matrices,
mean |C_src - C_sus|, and the score returned here is 1 - that distance (in [0, 1]).

The samples (`samples`):
- "wrong" (SAC-w, the paper's default for model stealing): samples of the defender's data that the
  source misclassifies (the paper's "wrongly classified samples"; where the source misclassifies fewer
  than n_triggers of them, the remainder is filled with correctly classified samples and the number of
  wrong ones is recorded).
- "cutmix" (SAC-m, for transfer learning / label-only settings): CutMix of random pairs of defender
  samples with a Beta(1, 1) area ratio (the public code's `cut_mix.py`).
Outputs are the suspect API's probabilities (the code correlates raw logits).
"""

from __future__ import annotations

import time

import numpy as np
import torch
import torch.nn.functional as F

from bench.fingerprint.base import Fingerprint, FingerprintMethod, register_fingerprint


def correlation_matrix(out: torch.Tensor) -> torch.Tensor:
    z = F.normalize(out.double(), dim=1)
    return (1 - z @ z.T) / 2


def cutmix(x: torch.Tensor, n: int, rng: np.random.Generator) -> torch.Tensor:
    """n CutMix images: a box of area (1 - lam) from a second random sample pasted into the first."""
    h, w = x.shape[-2:]
    out = []
    for _ in range(n):
        a, b = (int(i) for i in rng.integers(len(x), size=2))
        lam = float(rng.beta(1.0, 1.0))
        ch, cw = int(h * np.sqrt(1 - lam)), int(w * np.sqrt(1 - lam))
        cy, cx = int(rng.integers(h)), int(rng.integers(w))
        y0, y1 = max(cy - ch // 2, 0), min(cy + ch // 2, h)
        x0, x1 = max(cx - cw // 2, 0), min(cx + cw // 2, w)
        img = x[a].clone()
        img[..., y0:y1, x0:x1] = x[b][..., y0:y1, x0:x1]
        out.append(img)
    return torch.stack(out)


@register_fingerprint
class SAC(FingerprintMethod):
    name = "sac"
    paper = {"authors": "Jiyang Guan, Jian Liang, Ran He",
             "title": "Are You Stealing My Model? Sample Correlation for Fingerprinting Deep Neural Networks",
             "venue": "NeurIPS 2022",
             "arxiv": "2210.15427",
             "link": "https://github.com/guanjiyang/SAC"}
    description = "SAC (NeurIPS'22): sample-correlation matrices on misclassified (SAC-w) or CutMix (SAC-m) samples"
    labels_only = False
    defaults = {"n_triggers": 50, "samples": "wrong"}
    param_schema = {"samples": {"enum": ["wrong", "cutmix"]}}

    def fingerprint(self, source, data, seed):
        start, n = time.perf_counter(), int(self.params["n_triggers"])
        rng = np.random.default_rng(seed)
        order = torch.from_numpy(rng.permutation(len(data.labels)))
        x_all, y_all = data.images[order], data.labels[order]
        with torch.no_grad():
            pred = source.predict(x_all).argmax(1)
        n_wrong = 0
        if self.params["samples"] == "wrong":
            wrong, right = x_all[pred != y_all], x_all[pred == y_all]
            n_wrong = min(n, len(wrong))
            queries = torch.cat([wrong[:n_wrong], right[:n - n_wrong]])
        else:
            queries = cutmix(x_all, n, rng)
        with torch.no_grad():
            ref = correlation_matrix(F.softmax(source.predict(queries).double(), 1))
        return Fingerprint(queries, {"correlation": ref},
                           {"fit_ms": (time.perf_counter() - start) * 1e3, "wrong_samples": n_wrong})

    def verify(self, fingerprint, suspect):
        c = correlation_matrix(suspect.probs(fingerprint.queries))
        return float(1 - (c - fingerprint.reference["correlation"]).abs().mean())
