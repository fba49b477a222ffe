"""The ownership-verification protocol ("verify"): fingerprint a source model, score suspects.

A method is a `FingerprintMethod` plugin (registered like every defense, protocol "verify"):

    fp = method.fingerprint(source, data, seed)   # source: ModelAdapter; data: the defender's Split
    score = method.verify(fp, oracle)              # oracle: a Suspect query interface; higher = derived

`verify` sees a suspect only through a `SuspectOracle`: `labels(x)` always, `probs(x)` only when
the method is not `labels_only`. The oracle applies the verification attacks the suite names
(query processing before the model, DP-Logits noise after it) and records every query, so the
harness can count queries and run a query detector on them. The suite scores a method by ROC/AUC
over positive suspects (derived from the source) and negative ones (trained independently).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F

from bench.data.base import Split
from bench.defenses.base import DEFENSES, Defense, sample_generator
from bench.registry import Registry
from bench.errors import UserError
from bench.models.adapter import ModelAdapter


@dataclass
class Fingerprint:
    """What the owner keeps: the queries and whatever a method compares answers with."""

    queries: torch.Tensor  # (N, C, H, W) pixel space
    reference: dict = field(default_factory=dict)  # method-specific tensors (labels, losses, probes)
    summary: dict = field(default_factory=dict)  # non-secret facts recorded in results (timings, sizes)


class SuspectOracle:
    """Black-box access to a suspect: the answers an API would give, after the attacker's
    query processing (`input_attack(x, seed)`) and output perturbation (`output_attack(logits, seed)`)."""

    def __init__(self, adapter: ModelAdapter, labels_only: bool = False, input_attack=None, output_attack=None,
                 seed: int = 0):
        self.adapter, self.labels_only, self.seed = adapter, labels_only, seed
        self.input_attack, self.output_attack = input_attack, output_attack
        self.queries = 0
        self.log: list[torch.Tensor] = []

    def _logits(self, x: torch.Tensor) -> torch.Tensor:
        self.queries += len(x)
        self.log.append(x)
        call = self.queries  # a fresh seed per call, reproducible for the same query sequence
        if self.input_attack is not None:
            x = self.input_attack(x, self.seed + call)
        logits = self.adapter.predict(x.clamp(0, 1))
        if self.output_attack is not None:
            logits = self.output_attack(logits, self.seed + call)
        return logits

    def labels(self, x: torch.Tensor) -> torch.Tensor:
        return self._logits(x).argmax(1)

    def probs(self, x: torch.Tensor) -> torch.Tensor:
        return self.log_probs(x).exp()

    def log_probs(self, x: torch.Tensor) -> torch.Tensor:
        """Log-probabilities in float64 (a probability API's answers, without float32 rounding of p near 1)."""
        if self.labels_only:
            raise UserError("this suspect answers labels only; a labels_only method may call labels(), not probs()")
        return F.log_softmax(self._logits(x).double(), 1)


class FingerprintMethod(Defense):
    """Base of fingerprinting (ownership-verification) methods: MFUE, IPGuard, CAE, MetaFinger, ADV-TRA."""

    protocol = "verify"
    trains = True  # the suspect zoo (and most methods' fingerprints) train at run time
    labels_only: ClassVar[bool] = True
    defaults = {"n_triggers": 100}

    def fingerprint(self, source: ModelAdapter, data: Split, seed: int) -> Fingerprint:
        """Build the fingerprint of `source` from the defender's own data."""
        raise NotImplementedError

    def verify(self, fingerprint: Fingerprint, suspect: SuspectOracle) -> float:
        """Matching score of a suspect: higher means more likely derived from the source."""
        raise NotImplementedError



# fingerprinting methods: each is also a defense (protocol "verify"), so it registers in both registries
FINGERPRINTS: Registry[type[FingerprintMethod]] = Registry(
    "fingerprint method", "authbench.fingerprints", base=FingerprintMethod,
    modules=("bench.fingerprint",))  # the package imports its methods


def register_fingerprint(cls: type[FingerprintMethod]) -> type[FingerprintMethod]:
    """Class decorator: a fingerprinting method, listed as a fingerprint method and as a defense."""
    FINGERPRINTS.register(cls)
    DEFENSES.register(cls)
    return cls


def select_samples(source: ModelAdapter, data: Split, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """n samples of `data` that the source classifies correctly, drawn by a seeded permutation
    (the same draw for every method given the same seed: their differences are the methods' own)."""
    if n < 1:
        raise UserError(f"n_triggers must be >= 1, got {n}")
    order = torch.from_numpy(np.random.default_rng(seed).permutation(len(data.labels)))
    pred = source.predict(data.images[order]).argmax(1)
    keep = order[pred == data.labels[order]][:n]
    if len(keep) < n:
        raise UserError(f"only {len(keep)} samples of {data.name} are classified correctly by {source.name!r}; "
                        f"ask for n_triggers <= {len(keep)}")
    return data.images[keep].clone(), data.labels[keep].clone()


def other_labels(labels: torch.Tensor, num_classes: int, seed: int, stream: str) -> torch.Tensor:
    """One random target class != the true label per sample (seeded per sample index)."""
    out = []
    for i, y in enumerate(labels.tolist()):
        r = int(torch.randint(1, num_classes, (1,), generator=sample_generator(seed, i, stream)))
        out.append((y + r) % num_classes)
    return torch.tensor(out)


def logits_of(adapter: ModelAdapter, x: torch.Tensor) -> torch.Tensor:
    """Differentiable logits of a pixel-space batch (for fingerprint generation)."""
    return adapter.module(adapter.preprocess(x))


def match_rate(expected: torch.Tensor, got: torch.Tensor) -> float:
    return float((expected == got).float().mean())


class LabelMatchMethod(FingerprintMethod):
    """Adversarial fingerprints: the score is the share of queries on which the suspect's label
    equals the source's (IPGuard, CAE, MetaFinger, ADV-TRA)."""

    labels_only = True

    def verify(self, fingerprint: Fingerprint, suspect: SuspectOracle) -> float:
        return match_rate(fingerprint.reference["labels"], suspect.labels(fingerprint.queries))
