"""Query detectors: can the deployer of a suspect model spot fingerprint queries? (MFUE Sec. 4.6, Table 2)

A detector is fitted by the party that deploys the model, on its own clean data (the attacker's
half of the training split), and scores inputs: higher = more anomalous. Its threshold flags
`fpr` (10%) of clean test inputs, as MFUE Sec. 4.6 sets SHE's and SCADN's thresholds at the
bottom 10% quantile of normal samples; `detection_rate` is the share of fingerprint queries
flagged at that threshold (the quantity of MFUE Table 2).

Registered detectors (`DETECTORS`), each a stand-in of stated fidelity:
  msp    Hendrycks & Gimpel, "A Baseline for Detecting Misclassified and Out-of-Distribution
         Examples in Neural Networks", ICLR 2017: 1 - max softmax probability. Exact.
  she    Zhang et al., "Out-of-Distribution Detection based on In-Distribution Data Patterns
         Memorization with Modern Hopfield Energy", ICLR 2023 (MFUE ref. [51]): the stored pattern
         of class c is the mean penultimate feature of the training samples the model classifies
         correctly as c; the score of x is minus the Hopfield energy's inner product
         <h(x), S_{yhat(x)}> with its predicted class's pattern. The paper's method (its
         inner-product form, the default in its public code).
  daeit  Tian, Yang & Cai, "Detecting Adversarial Examples through Image Transformation", AAAI
         2018 (MFUE ref. [41]): the model's answers on rotated and shifted copies of x. The paper
         trains a classifier on those answers with adversarial examples; here, without adversarial
         training data, the score is 1 - the mean probability the transformed copies give x's
         predicted class (a training-free reading of the same signal).
  scadn  Yan et al., "Learning Semantic Context from Normal Samples for Unsupervised Anomaly
         Detection", AAAI 2021 (MFUE ref. [47]): a network learns on normal samples to fill in
         multi-scale striped masks from their context; the score is the reconstruction error in
         the masked regions, averaged over masks. Here the inpainter is a small convolutional
         encoder-decoder trained with an L2 loss only (the paper adds an adversarial loss and a
         larger generator).
"""

from __future__ import annotations

import math
from typing import ClassVar

import torch
import torch.nn as nn
import torch.nn.functional as F

from bench.data.base import Split
from bench.fingerprint import training as T
from bench.models.adapter import ModelAdapter
from bench.registry import Registry

DETECTOR_FPR = 0.10  # MFUE Sec. 4.6: threshold at the bottom 10% quantile of normal samples
BATCH = 256


def _batched(fn, x: torch.Tensor) -> torch.Tensor:
    return torch.cat([fn(x[i : i + BATCH]) for i in range(0, len(x), BATCH)]) if len(x) else torch.zeros(0)


class QueryDetector:
    """Base: `fit(model, clean_train, seed)`, then `score(x)` (higher = more anomalous)."""

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""  # one line: what it scores (its citation and fidelity below)
    citation: ClassVar[str] = ""
    fidelity: ClassVar[str] = ""

    def fit(self, model: ModelAdapter, clean: Split, seed: int) -> "QueryDetector":
        self.model = model
        return self

    def score(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    @torch.no_grad()
    def detection_rate(self, queries: torch.Tensor, clean_test: torch.Tensor, fpr: float = DETECTOR_FPR) -> float:
        """Share of `queries` scored above the threshold that flags `fpr` of `clean_test`."""
        threshold = torch.quantile(self.score(clean_test).double(), 1 - fpr)
        return float((self.score(queries).double() > threshold).float().mean())


# every detector the ownership protocol fits (the built-ins below; third-party ones: `authbench.detectors`)
DETECTORS: Registry[type[QueryDetector]] = Registry("detector", "authbench.detectors", base=QueryDetector)


@DETECTORS.register
class MaxSoftmax(QueryDetector):
    name = "msp"
    description = "1 - max softmax probability (Hendrycks & Gimpel, ICLR 2017; exact)"
    citation = ("Hendrycks & Gimpel, \"A Baseline for Detecting Misclassified and Out-of-Distribution Examples in "
                "Neural Networks\", ICLR 2017")
    fidelity = "exact"

    @torch.no_grad()
    def score(self, x):
        return 1 - _batched(lambda b: F.softmax(self.model.predict(b), 1).amax(1), x)


def penultimate(model: ModelAdapter, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(features entering the classification head, logits) of a pixel-space batch."""
    head = T.last_linear(model.module)
    seen = []
    handle = head.register_forward_hook(lambda m, inp, out: seen.append(inp[0].flatten(1)))
    try:
        logits = model.module(model.preprocess(x))
    finally:
        handle.remove()
    return seen[-1], logits


@DETECTORS.register
class SHE(QueryDetector):
    name = "she"
    description = "minus the Hopfield energy against the predicted class's stored pattern (SHE, ICLR 2023)"
    citation = ("Zhang et al., \"Out-of-Distribution Detection based on In-Distribution Data Patterns Memorization "
                "with Modern Hopfield Energy\", ICLR 2023")
    fidelity = "the paper's score (inner-product Hopfield energy with per-class stored patterns)"

    @torch.no_grad()
    def fit(self, model, clean, seed):
        model.module.eval()
        self.model = model
        feats, logits = zip(*(penultimate(model, clean.images[i : i + BATCH]) for i in range(0, len(clean.labels), BATCH)))
        feats, pred = torch.cat(feats), torch.cat(logits).argmax(1)
        right = pred == clean.labels
        dim = feats.shape[1]
        self.patterns = torch.stack([feats[right & (clean.labels == c)].mean(0) if (right & (clean.labels == c)).any()
                                     else torch.zeros(dim) for c in range(clean.num_classes)])
        return self

    @torch.no_grad()
    def score(self, x):
        def one(b):
            h, logits = penultimate(self.model, b)
            return -(h * self.patterns[logits.argmax(1)]).sum(1)

        return _batched(one, x)


TRANSFORMS = (("rotate", -10), ("rotate", 10), ("shift", (2, 0)), ("shift", (-2, 0)), ("shift", (0, 2)),
              ("shift", (0, -2)))


def transform(x: torch.Tensor, kind: str, arg) -> torch.Tensor:
    """A rotation by `arg` degrees (zero fill) or a translation by `arg` = (dy, dx) pixels."""
    if kind == "shift":
        return torch.roll(x, shifts=arg, dims=(-2, -1))
    a = math.radians(arg)
    theta = torch.tensor([[math.cos(a), -math.sin(a), 0.0], [math.sin(a), math.cos(a), 0.0]], dtype=x.dtype)
    grid = F.affine_grid(theta.expand(len(x), 2, 3), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, align_corners=False)


@DETECTORS.register
class DAEIT(QueryDetector):
    name = "daeit"
    description = "disagreement of rotated / shifted copies with x's prediction (after Tian et al., AAAI 2018)"
    citation = "Tian, Yang & Cai, \"Detecting Adversarial Examples through Image Transformation\", AAAI 2018"
    fidelity = ("training-free: 1 - mean probability of x's predicted class over rotated / shifted copies "
                "(the paper trains a classifier on those answers)")

    @torch.no_grad()
    def score(self, x):
        def one(b):
            p = F.softmax(self.model.predict(b), 1)
            y = p.argmax(1, keepdim=True)
            kept = [F.softmax(self.model.predict(transform(b, k, a).clamp(0, 1)), 1).gather(1, y)[:, 0]
                    for k, a in TRANSFORMS]
            return 1 - torch.stack(kept).mean(0)

        return _batched(one, x)


def stripe_masks(shape, seed: int, n: int = 4) -> torch.Tensor:
    """n binary masks (1 = hidden) of horizontal or vertical stripes at widths 2, 4, ...: SCADN's multi-scale
    striped masks, seeded."""
    _, h, w = shape
    gen = torch.Generator().manual_seed(seed)
    masks = torch.zeros(n, 1, h, w)
    for i in range(n):
        width = 2 ** (1 + i % 3)
        offset = int(torch.randint(0, width, (1,), generator=gen))
        on = ((torch.arange(h if i % 2 == 0 else w) + offset) // width) % 2 == 0
        masks[i, 0] = on.view(-1, 1).expand(h, w) if i % 2 == 0 else on.view(1, -1).expand(h, w)
    return masks


class Inpainter(nn.Module):
    def __init__(self, channels: int, width: int = 32):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(channels + 1, width, 3, padding=1), nn.ReLU(),
            nn.Conv2d(width, width, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(width, width, 3, padding=2, dilation=2), nn.ReLU(),
            nn.ConvTranspose2d(width, width, 4, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(width, channels, 3, padding=1), nn.Sigmoid())

    def forward(self, x, mask):
        return self.net(torch.cat([x * (1 - mask), mask.expand(len(x), 1, *x.shape[-2:])], 1))


@DETECTORS.register
class SCADN(QueryDetector):
    name = "scadn"
    description = "masked-region reconstruction error of a striped-mask inpainter (after SCADN, AAAI 2021)"
    citation = ("Yan et al., \"Learning Semantic Context from Normal Samples for Unsupervised Anomaly Detection\", "
                "AAAI 2021")
    fidelity = "small L2-trained inpainter on striped masks (the paper's GAN generator and adversarial loss omitted)"
    epochs, max_images = 8, 4000

    def fit(self, model, clean, seed):
        self.model = model
        x = clean.images[: self.max_images]
        self.masks = stripe_masks(x.shape[1:], seed)
        torch.manual_seed(seed)
        self.net = Inpainter(x.shape[1])
        opt = torch.optim.Adam(self.net.parameters(), lr=2e-3)
        gen = torch.Generator().manual_seed(seed)
        for _ in range(self.epochs):
            for idx in torch.randperm(len(x), generator=gen).split(64):
                m = self.masks[torch.randint(len(self.masks), (1,), generator=gen)]
                loss = (((self.net(x[idx], m) - x[idx]) ** 2) * m).sum() / (m.sum() * len(idx) * x.shape[1])
                opt.zero_grad()
                loss.backward()
                opt.step()
        self.net.eval()
        return self

    @torch.no_grad()
    def score(self, x):
        def one(b):
            errs = [(((self.net(b, m[None]) - b) ** 2) * m).flatten(1).sum(1) / m.sum() for m in self.masks]
            return torch.stack(errs).mean(0)

        return _batched(one, x)
