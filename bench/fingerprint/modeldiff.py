"""ModelDiff (Yuanchun Li, Ziqi Zhang, Bingyan Liu, Ziyue Yang and Yunxin Liu, "ModelDiff: Testing-Based
DNN Similarity Comparison for Model Reuse Detection", ISSTA 2021, doi 10.1145/3460319.3464816).

The owner profiles a model by its decision distance vector (DDV) on input pairs: for pairs
(x_i, x_i'), DDV_i = cosine distance between the model's outputs on x_i and on x_i'. Two models are
similar when their DDVs point the same way: similarity = cosine similarity of the two DDVs. The
2 x n_triggers profiling inputs are shuffled normal samples, paired i with i + n_triggers (as the public
code pairs them), then mutated by a hill climb that adds or subtracts `epsilon` at one random input
position of one random input per iteration and keeps a move when it raises a diversity score (the
mean pairwise output distance times the mean distance from the seeds' outputs, the public code's
`_gen_profiling_inputs_search`).

Departures, each a parameter:
- The public code searches with BOTH compared models' outputs; a fingerprint here is made once,
  before any suspect is seen, so the search uses the source only (a suspect-adaptive search cannot be
  reused across suspects).
- The paper's comparison is the DDV cosine (default, `compare = "ddv"`); the public code's
  `compare()` returns the decision distance MATRIX variant: the pairwise Euclidean distance matrix of
  all outputs, compared by cosine mapped to (cos + 1) / 2 (`compare = "ddm"`).
- Outputs are the suspect API's probabilities (the code compares raw model outputs).
The returned score is (cos + 1) / 2 for "ddv" as well, so every score lies in [0, 1].
"""

from __future__ import annotations

import time

import numpy as np
import torch
import torch.nn.functional as F

from bench.fingerprint.base import Fingerprint, FingerprintMethod, register_fingerprint, select_samples


def _pair_ddv(out: torch.Tensor) -> torch.Tensor:
    """Cosine distance between the outputs of each pair: rows [0, n) against rows [n, 2n)."""
    n = len(out) // 2
    return 1 - F.cosine_similarity(out[:n], out[n:], dim=1)


def _ddm(out: torch.Tensor) -> torch.Tensor:
    return torch.cdist(out, out)


def _similarity(a: torch.Tensor, b: torch.Tensor) -> float:
    """Cosine of the flattened arrays, mapped to [0, 1]; two constant-zero arrays are identical (1)."""
    a, b = a.flatten().double(), b.flatten().double()
    if float(a.norm()) == 0.0 and float(b.norm()) == 0.0:
        return 1.0
    return float((F.cosine_similarity(a, b, dim=0) + 1) / 2)


@register_fingerprint
class ModelDiff(FingerprintMethod):
    name = "modeldiff"
    paper = {"authors": "Yuanchun Li, Ziqi Zhang, Bingyan Liu, Ziyue Yang, Yunxin Liu",
             "title": "ModelDiff: Testing-Based DNN Similarity Comparison for Model Reuse Detection",
             "venue": "ISSTA 2021",
             "arxiv": "2106.08890",
             "link": "https://doi.org/10.1145/3460319.3464816"}
    description = "ModelDiff (ISSTA'21): decision distance vectors on searched input pairs, cosine similarity"
    labels_only = False
    defaults = {"n_triggers": 100, "epsilon": 0.2, "iterations": 1000, "compare": "ddv"}
    param_schema = {"compare": {"enum": ["ddv", "ddm"]}, "epsilon": {"type": "number", "exclusiveMinimum": 0},
                    "iterations": {"type": "integer", "minimum": 0}}

    def _outputs(self, source, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return F.softmax(source.predict(x.clamp(0, 1)).double(), 1)

    def _diversity(self, out: torch.Tensor, seed_out: torch.Tensor) -> float:
        """The search's objective: mean pairwise output distance times the mean distance from the seeds'."""
        return float(torch.cdist(out, out).mean() * (out - seed_out).norm(dim=1).mean())

    def fingerprint(self, source, data, seed):
        p, start = self.params, time.perf_counter()
        x, _ = select_samples(source, data, 2 * int(p["n_triggers"]), seed)
        rng = np.random.default_rng(seed)
        seed_out = self._outputs(source, x)
        mutated, eps = x.clone(), float(p["epsilon"])
        score, accepted = self._diversity(seed_out, seed_out), 0
        flat = mutated.view(len(mutated), -1)
        for _ in range(int(p["iterations"])):
            i, pos = int(rng.integers(len(mutated))), int(rng.integers(flat.shape[1]))
            best = None
            for sign in (1.0, -1.0):
                trial = mutated.clone()
                trial.view(len(trial), -1)[i, pos] += sign * eps
                s = self._diversity(self._outputs(source, trial), seed_out)
                if s > score and (best is None or s > best[0]):
                    best = (s, trial)
            if best is not None:
                score, mutated, accepted = best[0], best[1], accepted + 1
                flat = mutated.view(len(mutated), -1)
        queries = mutated.clamp(0, 1)
        reference = self._profile(self._outputs(source, queries))
        return Fingerprint(queries, {"profile": reference},
                           {"fit_ms": (time.perf_counter() - start) * 1e3, "accepted_mutations": accepted})

    def _profile(self, out: torch.Tensor) -> torch.Tensor:
        return _pair_ddv(out) if self.params["compare"] == "ddv" else _ddm(out)

    def verify(self, fingerprint, suspect):
        out = suspect.probs(fingerprint.queries)
        return _similarity(fingerprint.reference["profile"], self._profile(out))
