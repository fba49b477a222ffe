"""ADV-TRA (Xu et al., NeurIPS 2024): fingerprints along adversarial trajectories.

From a clean sample, the trajectory walks with signed targeted gradient steps of growing size
(the "progressive adversarial levels") towards a sequence of `m` target classes in turn,
recording `length` points in all; the trajectory crosses the source's decision boundaries
several times, so it samples the decision surface rather than one boundary point. Every point
is a query; the fingerprint is the source's label at each point and the score is the share of
points a suspect labels the same. MFUE Appendix B: trajectory length 40 with m = 8 (read here as
8 target classes in turn); the step schedule (`step`, `growth`) is this harness's choice.
"""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F

from bench.defenses.base import sample_generator
from bench.fingerprint.base import Fingerprint, LabelMatchMethod, logits_of, register_fingerprint, select_samples


@register_fingerprint
class ADVTRA(LabelMatchMethod):
    name = "adv-tra"
    paper = {"authors": "Tianlong Xu, Chen Wang, Gaoyang Liu, Yang Yang, Liu Wei",
             "title": "United We Stand, Divided We Fall: Fingerprinting Deep Neural Networks "
                      "via Adversarial Trajectories",
             "venue": "NeurIPS 2024"}  # as MFUE's references cite it
    description = "ADV-TRA: adversarial trajectories crossing m class boundaries, label matching along the path"
    defaults = {"n_triggers": 100, "length": 40, "m": 8, "step": 2 / 255, "growth": 1.5}

    def fingerprint(self, source, data, seed):
        p, start = self.params, time.perf_counter()
        x, y = select_samples(source, data, int(p["n_triggers"]), seed)
        length, m, k = int(p["length"]), int(p["m"]), data.num_classes
        per = max(1, length // m)
        # target sequence per sample: m classes, each differing from the one before
        seq = torch.stack([torch.randint(1, k, (m,), generator=sample_generator(seed, i, "adv-tra"))
                           for i in range(len(y))])
        targets = (y[:, None] + seq.cumsum(1)) % k
        cur, points = x.clone(), []
        for n in range(length):
            t = targets[:, min(n // per, m - 1)]
            size = float(p["step"]) * float(p["growth"]) ** (n % per)
            cur.requires_grad_(True)
            loss = F.cross_entropy(logits_of(source, cur), t)
            (grad,) = torch.autograd.grad(loss, cur)
            cur = (cur.detach() - size * grad.sign()).clamp(0, 1)
            points.append(cur)
        queries = torch.stack(points, 1).flatten(0, 1)  # sample-major: trajectory i is rows i*length..
        labels = source.predict(queries).argmax(1)
        return Fingerprint(queries, {"labels": labels}, {"fit_ms": (time.perf_counter() - start) * 1e3,
                                                         "queries_per_trajectory": length})
