"""CAE: conferrable adversarial examples (Lukas et al., ICLR 2021).

Targeted adversarial examples that transfer to surrogate models (copies derived from the source)
but not to reference models (trained independently). For a target t the conferrability is
mean_s p_s(t) * (1 - max_r p_r(t)); each example maximizes log p_src(t) + log conferrability
within an L-inf ball of `eps` (Adam on the pixels). Of `candidates` x n_triggers examples, the
n_triggers with the highest conferrability that the source labels t are kept. MFUE Appendix B
configures 10 surrogate and 10 reference models; here both are the defender's own pool
(bench.fingerprint.pool), built on the defender's data. The pool mixes fine-tuned, pruned and
distilled copies (CAE's surrogates are extracted copies). eps, steps, lr and candidates are not
given in MFUE's appendix; the defaults are this harness's choice.
"""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F

from bench.core.errors import UserError
from bench.fingerprint.base import Fingerprint, LabelMatchMethod, logits_of, other_labels, register_fingerprint, select_samples
from bench.fingerprint.pool import NEGATIVE_FAMILIES, defender_pool


@register_fingerprint
class CAE(LabelMatchMethod):
    name = "cae"
    paper = {"authors": "Nils Lukas, Yuxuan Zhang, Florian Kerschbaum",
             "title": "Deep Neural Network Fingerprinting by Conferrable Adversarial Examples",
             "venue": "ICLR 2021"}  # as MFUE's references cite it
    description = "CAE: conferrable adversarial examples (surrogates vs references), label matching"
    defaults = {"n_triggers": 100, "n_surrogates": 10, "n_references": 10, "eps": 0.05, "steps": 50, "lr": 0.005,
                "candidates": 2, "pool_epochs": 10, "pool_families": list(NEGATIVE_FAMILIES)}

    def fingerprint(self, source, data, seed):
        p, start = self.params, time.perf_counter()
        if int(p["candidates"]) < 1:
            raise UserError(f"cae: candidates must be >= 1, got {p['candidates']!r}")
        surrogates, references = defender_pool(source, data, int(p["n_surrogates"]), int(p["n_references"]), seed,
                                               int(p["pool_epochs"]), tuple(p["pool_families"]))
        n = int(p["n_triggers"])
        x, y = select_samples(source, data, n * int(p["candidates"]), seed)
        t = other_labels(y, data.num_classes, seed, "cae")
        pre, eps = source.preprocess, float(p["eps"])
        delta = torch.zeros_like(x, requires_grad=True)
        opt = torch.optim.Adam([delta], lr=float(p["lr"]))

        def conferrability(adv):
            ps = torch.stack([F.softmax(m(pre(adv)), 1) for m in surrogates]).mean(0).gather(1, t[:, None])[:, 0]
            pr = torch.stack([F.softmax(m(pre(adv)), 1) for m in references]).amax(0).gather(1, t[:, None])[:, 0]
            return ps * (1 - pr)

        for _ in range(int(p["steps"])):
            adv = (x + delta).clamp(0, 1)
            loss = -(F.log_softmax(logits_of(source, adv), 1).gather(1, t[:, None])[:, 0]
                     + torch.log(conferrability(adv) + 1e-8)).sum()
            opt.zero_grad()
            loss.backward()
            opt.step()
            with torch.no_grad():
                delta.clamp_(-eps, eps)
        with torch.no_grad():
            adv = (x + delta).clamp(0, 1)
            score = conferrability(adv) * (source.predict(adv).argmax(1) == t)
        keep = score.argsort(descending=True)[:n]
        queries = adv[keep]
        summary = {"fit_ms": (time.perf_counter() - start) * 1e3, "mean_conferrability": float(score[keep].mean())}
        return Fingerprint(queries, {"labels": source.predict(queries).argmax(1)}, summary)
