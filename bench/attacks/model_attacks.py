"""Model attacks on a released (locked) model: fine-tuning, magnitude pruning, distillation.

Each returns a new module; the input module is never modified. The attacker's data is a Split
of pixel-space images; `preprocess` normalizes them before the module.
"""

from __future__ import annotations

import copy

import torch
import torch.nn as nn
import torch.nn.functional as F
import torch.nn.utils.prune as prune

from bench.attacks.model import ModelAttack
from bench.errors import UserError

BATCH = 64


def _fraction(params: dict, key: str = "fraction") -> float:
    value = float(params[key])
    if not 0 < value <= 1:
        raise UserError(f"model attack {key} must be in (0, 1], got {params[key]!r}")
    return value


def _rows(source, idx: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Rows `idx` of a tensor, or of a Split (read lazily: only this batch is decoded or encoded)."""
    rows = source[idx] if isinstance(source, torch.Tensor) else source.read(idx.numpy())
    return rows.to(device)


def train_module(module: nn.Module, loss_fn, inputs, targets, epochs: int, lr: float, seed: int) -> nn.Module:
    """AdamW over seeded mini-batches of (inputs, targets) on the module's device; loss_fn(module, inputs,
    targets) -> loss. `inputs` and `targets` are tensors or Splits (whose images are read batch by batch)."""
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(module.parameters(), lr=lr)
    device = next(module.parameters()).device
    module.train()
    for _ in range(int(epochs)):
        order = torch.randperm(len(targets), generator=gen)
        for i in range(0, len(order), BATCH):
            idx = order[i : i + BATCH]
            loss = loss_fn(module, _rows(inputs, idx, device), _rows(targets, idx, device))
            opt.zero_grad()
            loss.backward()
            opt.step()
    return module.eval()


def _attacker_data(data, fraction: float, seed: int):
    """A seeded random `fraction` of the attacker's Split (a new draw per seed/trial)."""
    return data.subset(max(1, round(fraction * len(data.labels))), seed)


class FineTune(ModelAttack):
    name = "finetune"
    trains = True
    description = "fine-tune the released model (AdamW, cross-entropy) on a seeded random fraction of the attacker's data"
    defaults = {"fraction": 0.05, "epochs": 10, "lr": 1e-3}

    def __call__(self, module, preprocess, data, seed):
        subset = _attacker_data(data, _fraction(self.params), seed)

        def loss(m, x, y):
            return F.cross_entropy(m(preprocess(x)), y)

        return train_module(copy.deepcopy(module), loss, subset, subset.labels, self.params["epochs"],
                            self.params["lr"], seed)


class Prune(ModelAttack):
    name = "prune"
    description = "global magnitude (L1-unstructured) pruning of the Conv2d/Linear weights, made permanent"
    defaults = {"ratio": 0.2}

    def __call__(self, module, preprocess, data, seed):
        return magnitude_prune(module, float(self.params["ratio"]))


def magnitude_prune(module: nn.Module, rate: float) -> nn.Module:
    """A copy of `module` with the `rate` fraction of Conv2d/Linear weights of smallest |w| zeroed
    (global L1-unstructured pruning, made permanent)."""
    if not 0 <= rate < 1:
        raise UserError(f"prune ratio must be in [0, 1), got {rate!r}")
    module = copy.deepcopy(module)
    targets = [(m, "weight") for m in module.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    prune.global_unstructured(targets, pruning_method=prune.L1Unstructured, amount=rate)
    for m, name in targets:
        prune.remove(m, name)
    return module.eval()


class Distill(ModelAttack):
    """Train a fresh copy of the architecture (every module with `reset_parameters` re-initialised
    from the seed; free parameters such as position embeddings keep the released values) on a
    seeded `fraction` of the attacker's data with loss = T^2 KL(student_T || released_T) +
    cross-entropy on the attacker's ground-truth labels, equal weights, AdamW lr 1e-3."""

    trains = True
    name = "distill"
    description = "knowledge distillation into a re-initialised copy: released model's soft labels (T) + true hard labels"
    defaults = {"fraction": 0.5, "epochs": 15, "temperature": 4.0}

    def __call__(self, module, preprocess, data, seed):
        subset = _attacker_data(data, _fraction(self.params), seed)
        t = float(self.params["temperature"])
        teacher = copy.deepcopy(module).eval()
        student = copy.deepcopy(module)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            for m in student.modules():
                for reset in ("reset_parameters", "_reset_parameters"):
                    if callable(getattr(m, reset, None)):
                        getattr(m, reset)()
                        break

        def loss(m, x, y):
            x = preprocess(x)
            with torch.no_grad():
                soft = F.log_softmax(teacher(x) / t, 1)
            logits = m(x)
            kd = F.kl_div(F.log_softmax(logits / t, 1), soft, reduction="batchmean", log_target=True)
            return kd * t * t + F.cross_entropy(logits, y)

        return train_module(student, loss, subset, subset.labels, self.params["epochs"], 1e-3, seed)


MODEL_ATTACKS = {cls.name: cls for cls in (FineTune, Prune, Distill)}
