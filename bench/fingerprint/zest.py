"""Zest (Hengrui Jia, Hongyu Chen, Jonas Guan, Ali Shahin Shamsabadi and Nicolas Papernot, "A Zest of LIME:
Towards Architecture-Independent Model Distances", ICLR 2022).

A model's signature is the concatenation of local linear explanations (LIME) of its outputs around
`n_triggers` reference samples: for each reference, `n_masks` random binary masks over its
superpixels (masked superpixels filled with the data's mean image), the model's outputs on the masked
images, and the least-squares linear map from masks to outputs (the public code's `train_lime_model`:
unweighted pseudo-inverse fit, the all-ones mask first). Two models are close when their signatures
are: the score is (1 + cos) / 2 of the two signatures (cosine is one of the paper's distances; the
code also offers l1, l2 and l-inf, `distance`: an l-p distance d scores 1 / (1 + d / dim^(1/p)), l-inf
1 / (1 + d)).

Superpixels: the paper uses quickshift; on the small images here (8x8 digits upsampled, CIFAR 32x32)
the segments are a regular grid of `segment` x `segment` pixel cells (the harness's choice, labelled).
Outputs (`outputs`): the code fits the raw model outputs (logits); a probability API gives
probabilities, whose logarithm is the logits up to a per-image shift, so the default fits
log-probabilities ("log-probs"); "probs" fits the probabilities themselves, which saturate on a
confident model (on the digits MLP they do not separate a fine-tuned copy from an independent model).
"""

from __future__ import annotations

import time

import numpy as np
import torch

from bench.fingerprint.base import Fingerprint, FingerprintMethod, register_fingerprint, select_samples


def grid_segments(h: int, w: int, cell: int) -> torch.Tensor:
    """(H, W) superpixel ids of a regular grid of cell x cell pixels."""
    rows, cols = torch.arange(h) // cell, torch.arange(w) // cell
    return rows[:, None] * int((w + cell - 1) // cell) + cols[None, :]


def masked_images(x: torch.Tensor, masks: torch.Tensor, segments: torch.Tensor, fill: torch.Tensor) -> torch.Tensor:
    """Every mask applied to one image: superpixels whose mask bit is 0 take the fill image's pixels."""
    keep = masks[:, segments].to(x.dtype)[:, None]  # (M, 1, H, W)
    return x[None] * keep + fill[None] * (1 - keep)


def lime_weights(masks: torch.Tensor, outputs: torch.Tensor) -> torch.Tensor:
    """Least-squares linear map from masks (M, F) to outputs (M, K): (F, K)."""
    a = masks.double()
    return torch.linalg.pinv(a.T @ a) @ a.T @ outputs.double()


@register_fingerprint
class Zest(FingerprintMethod):
    name = "zest"
    paper = {"authors": "Hengrui Jia, Hongyu Chen, Jonas Guan, Ali Shahin Shamsabadi, Nicolas Papernot",
             "title": "A Zest of LIME: Towards Architecture-Independent Model Distances",
             "venue": "ICLR 2022",
             "link": "https://openreview.net/forum?id=OUz_9TiTv9j"}
    description = "Zest (ICLR'22): LIME explanation signatures around reference samples, cosine distance"
    labels_only = False
    defaults = {"n_triggers": 128, "n_masks": 1000, "segment": 4, "distance": "cos", "outputs": "log-probs"}
    param_schema = {"distance": {"enum": ["cos", "l1", "l2", "linf"]}, "outputs": {"enum": ["log-probs", "probs"]}, "n_masks": {"type": "integer", "minimum": 2},
                    "segment": {"type": "integer", "minimum": 1}}

    def fingerprint(self, source, data, seed):
        p, start = self.params, time.perf_counter()
        x, _ = select_samples(source, data, int(p["n_triggers"]), seed)
        h, w = x.shape[-2:]
        segments = grid_segments(h, w, int(p["segment"]))
        rng = np.random.default_rng(seed)
        masks = torch.from_numpy(rng.integers(0, 2, (len(x), int(p["n_masks"]), int(segments.max()) + 1)))
        masks[:, 0] = 1  # the unmasked reference first, as in the code
        fill = data.images.double().mean(0).to(x.dtype)
        queries = torch.cat([masked_images(x[i], masks[i], segments, fill) for i in range(len(x))])
        fp = Fingerprint(queries, {"masks": masks}, {"fit_ms": 0.0, "features": int(masks.shape[-1])})
        fp.reference["signature"] = self._signature(fp, self._outputs(source.predict(queries).double()))
        fp.summary["fit_ms"] = (time.perf_counter() - start) * 1e3
        return fp

    @staticmethod
    def _signature(fp: Fingerprint, outputs: torch.Tensor) -> torch.Tensor:
        masks = fp.reference["masks"]
        per = outputs.view(masks.shape[0], masks.shape[1], -1)
        return torch.cat([lime_weights(masks[i], per[i]).flatten() for i in range(len(masks))])

    def _outputs(self, logits: torch.Tensor) -> torch.Tensor:
        return logits.log_softmax(1) if self.params["outputs"] == "log-probs" else logits.softmax(1)

    def verify(self, fingerprint, suspect):
        a = fingerprint.reference["signature"]
        out = suspect.log_probs(fingerprint.queries)
        b = self._signature(fingerprint, out if self.params["outputs"] == "log-probs" else out.exp())
        kind = self.params["distance"]
        if kind == "cos":
            return float((torch.nn.functional.cosine_similarity(a, b, dim=0) + 1) / 2)
        order = {"l1": 1, "l2": 2, "linf": float("inf")}[kind]
        d = float(torch.linalg.vector_norm(a - b, ord=order))
        scale = 1.0 if kind == "linf" else float(len(a)) ** (1 / order)
        return 1 / (1 + d / scale)
