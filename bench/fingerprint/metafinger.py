"""MetaFinger (Yang et al., IJCAI 2022): fingerprints meta-trained on a model pool.

Each fingerprint image starts from a clean sample and a random target t; it is optimized so
that the source and the positive pool (copies derived from the source) label it t while the
negative pool (independent models) does not: loss = CE(src, t) + mean_pos CE(pos, t)
- lambda * mean_neg min(CE(neg, t), cap), with a fresh random augmentation (Gaussian noise and a
small shift) of the image at every step so the fingerprint sits in the inner decision area,
not on the boundary. MFUE Appendix B: a pool of 20 positive and 20 negative models. eps, steps, lr,
neg_weight, cap and noise are not given there; the defaults are this harness's choice.
"""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F

from bench.fingerprint.base import Fingerprint, LabelMatchMethod, logits_of, other_labels, register_fingerprint, select_samples
from bench.fingerprint.pool import NEGATIVE_FAMILIES, defender_pool
from bench.fingerprint.training import shift


@register_fingerprint
class MetaFinger(LabelMatchMethod):
    name = "metafinger"
    paper = {"authors": "Kang Yang, Run Wang, Lina Wang",
             "title": "MetaFinger: Fingerprinting the Deep Neural Networks with Meta-training",
             "venue": "IJCAI 2022"}  # as MFUE's references cite it
    description = "MetaFinger: fingerprints meta-trained on a positive/negative model pool with augmentation"
    defaults = {"n_triggers": 100, "n_positive": 20, "n_negative": 20, "eps": 0.2, "steps": 100, "lr": 0.01,
                "neg_weight": 1.0, "cap": 5.0, "noise": 0.03, "pool_epochs": 10,
                "pool_families": list(NEGATIVE_FAMILIES)}

    def fingerprint(self, source, data, seed):
        p, start = self.params, time.perf_counter()
        pos, neg = defender_pool(source, data, int(p["n_positive"]), int(p["n_negative"]), seed, int(p["pool_epochs"]),
                                 tuple(p["pool_families"]))
        x, y = select_samples(source, data, int(p["n_triggers"]), seed)
        t = other_labels(y, data.num_classes, seed, "metafinger")
        pre, eps = source.preprocess, float(p["eps"])
        gen = torch.Generator().manual_seed(seed)
        delta = torch.zeros_like(x, requires_grad=True)
        opt = torch.optim.Adam([delta], lr=float(p["lr"]))
        for _ in range(int(p["steps"])):
            adv = (x + delta).clamp(0, 1)
            aug = shift(adv + float(p["noise"]) * torch.randn(adv.shape, generator=gen), gen, 1)
            loss = F.cross_entropy(logits_of(source, aug), t)
            loss = loss + sum(F.cross_entropy(m(pre(aug)), t) for m in pos) / max(1, len(pos))
            loss = loss - float(p["neg_weight"]) * sum(
                F.cross_entropy(m(pre(aug)), t).clamp(max=float(p["cap"])) for m in neg) / max(1, len(neg))
            opt.zero_grad()
            loss.backward()
            opt.step()
            with torch.no_grad():
                delta.clamp_(-eps, eps)
        queries = (x + delta).detach().clamp(0, 1)
        labels = source.predict(queries).argmax(1)
        summary = {"fit_ms": (time.perf_counter() - start) * 1e3,
                   "source_hits_target": float((labels == t).float().mean())}
        return Fingerprint(queries, {"labels": labels}, summary)
