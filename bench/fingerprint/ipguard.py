"""IPGuard (Cao et al., AsiaCCS 2021): data points near the source's classification boundary.

From a clean sample x of class i and a random other class j, minimize over the input
ReLU(Z_i - Z_j + k) + ReLU(max_{t != i, j} Z_t - Z_i) on the source's logits Z (Adam on the
pixels, clipped to [0, 1]): a point where j wins over i by a margin k, i is the runner-up and no
third class competes. The fingerprint is the source's labels on these points; the score is the
share of them a suspect labels the same. k = 10 on CIFAR (MFUE Appendix B; 100 on ImageNet);
steps and lr of the optimizer are this harness's choice.
"""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F

from bench.fingerprint.base import Fingerprint, LabelMatchMethod, logits_of, other_labels, register_fingerprint, select_samples


@register_fingerprint
class IPGuard(LabelMatchMethod):
    name = "ipguard"
    paper = {"authors": "Xiaoyu Cao, Jinyuan Jia, Neil Zhenqiang Gong",
             "title": "IPGuard: Protecting Intellectual Property of Deep Neural Networks via "
                      "Fingerprinting the Classification Boundary",
             "venue": "ACM ASIACCS 2021"}  # as MFUE's references cite it
    description = "IPGuard: boundary-near data points (margin k), label matching"
    defaults = {"n_triggers": 100, "k": 10.0, "steps": 100, "lr": 0.01}

    def fingerprint(self, source, data, seed):
        start = time.perf_counter()
        x, y = select_samples(source, data, int(self.params["n_triggers"]), seed)
        j = other_labels(y, data.num_classes, seed, "ipguard")
        adv = x.clone().requires_grad_(True)
        opt = torch.optim.Adam([adv], lr=float(self.params["lr"]))
        k = float(self.params["k"])
        for _ in range(int(self.params["steps"])):
            z = logits_of(source, adv.clamp(0, 1))
            zi, zj = z.gather(1, y[:, None])[:, 0], z.gather(1, j[:, None])[:, 0]
            rest = z.scatter(1, torch.stack([y, j], 1), float("-inf")).max(1).values
            loss = (F.relu(zi - zj + k) + F.relu(rest - zi)).sum()
            opt.zero_grad()
            loss.backward()
            opt.step()
        queries = adv.detach().clamp(0, 1)
        labels = source.predict(queries).argmax(1)
        return Fingerprint(queries, {"labels": labels}, {"fit_ms": (time.perf_counter() - start) * 1e3})
