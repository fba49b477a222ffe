"""Model attacks on a released (locked) model: fine-tuning, magnitude pruning, fine-pruning, distillation.

Each returns a new module; the input module is never modified. The attacker's data is a Split
of pixel-space images; `preprocess` normalizes them before the module.
"""

from __future__ import annotations

import copy

import torch
import torch.nn as nn
import torch.nn.functional as F
import torch.nn.utils.prune as prune

from bench.attacks.base import ATTACKS
from bench.attacks.model import ModelAttack
from bench.core.errors import UserError

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


@ATTACKS.register
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


@ATTACKS.register
class ForgedFineTune(ModelAttack):
    """The fair fine-tuning attack on passport locks: DeepIPR's ambiguity (forgery) attack (Lixin Fan, Kam Woh
    Ng and Chee Seng Chan, NeurIPS 2019, Sec. 4; the public code's fake attacks 1-3). A released passport
    network carries zero passports, so every passport layer's scale and bias are zero and plain fine-tuning
    gets no gradient through them: `finetune` on it measures the zeros, not the lock. Here the attacker first
    forges passports from two of its own images (their layer-input features through the released weights,
    `bench.defenses.locks.forge_passports`), scaled to a fresh BatchNorm's magnitude (`rescale`), then
    fine-tunes them as parameters on a seeded `fraction` of its data: with the weights (`train = "all"`,
    default) or with the weights frozen (`train = "passports"`: the code's fake attack 3, without its term that
    pushes the forgery away from the genuine passport, which this attacker does not have). A model without
    passport layers is fine-tuned as `finetune` does (`train = "all"`; with `"passports"` it is left as is)."""

    name = "forge-finetune"
    trains = True
    description = ("fine-tune with forged passports (DeepIPR's ambiguity attack, Fan et al., NeurIPS 2019): passports "
                   "forged from the attacker's images, then fine-tuned with the weights on its data; plain "
                   "fine-tuning where the model has no passport layers")
    defaults = {"fraction": 0.05, "epochs": 10, "lr": 1e-3, "train": "all", "rescale": True, "recalibrate": True}
    param_schema = {"train": {"enum": ["all", "passports"]}, "epochs": {"type": "integer", "minimum": 0},
                    "lr": {"type": "number", "exclusiveMinimum": 0}}

    def __call__(self, module, preprocess, data, seed):
        from bench.defenses.locks import forge_passports, passport_norms, recalibrate, rescale_passports  # (a cycle)

        subset = _attacker_data(data, _fraction(self.params), seed)
        module = copy.deepcopy(module).eval()
        norms = passport_norms(module)
        if norms:
            if len(subset.labels) < 2:
                raise UserError(f"forge-finetune needs at least 2 attacker images to forge passports; fraction "
                                f"{self.params['fraction']} of {len(data.labels)} gives {len(subset.labels)}")
            x = preprocess(_rows(subset, torch.arange(2), next(module.parameters()).device))
            forged = forge_passports(module, x)
            if self.params["rescale"]:
                forged = rescale_passports(module, forged)
            for norm, (pg, pb) in zip(norms, forged):
                norm.set_passports(pg, pb)
        if self.params["train"] == "passports":
            for p in module.parameters():
                p.requires_grad_(False)
            if not norms:
                return module
        for norm in norms:
            norm.learn_passports()

        def loss(m, x, y):
            return F.cross_entropy(m(preprocess(x)), y)

        module = train_module(module, loss, subset, subset.labels, self.params["epochs"], self.params["lr"], seed)
        for norm in norms:
            norm.learn_passports(False)
        for p in module.parameters():
            p.requires_grad_(True)
        if norms and self.params["recalibrate"]:  # the defender's own last step, on the attacker's data
            recalibrate(module, [n.bn for n in norms], subset, preprocess)
        return module.eval()


@ATTACKS.register
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


def _hidden_layers(module: nn.Module, x: torch.Tensor) -> tuple[list[tuple[str, nn.Module]], dict]:
    """The hidden Conv2d/Linear layers in execution order (the first and last layer the input reaches are
    left out) and their outputs on `x`."""
    order, outputs, handles = [], {}, []

    def hook(name):
        def fn(mod, args, out):
            if name not in outputs:
                order.append((name, mod))
                outputs[name] = out.detach()
        return fn

    for name, mod in module.named_modules():
        if isinstance(mod, (nn.Conv2d, nn.Linear)):
            handles.append(mod.register_forward_hook(hook(name)))
    try:
        with torch.no_grad():
            module(x)
    finally:
        for h in handles:
            h.remove()
    return order[1:-1], outputs


@ATTACKS.register
class FinePrune(ModelAttack):
    """Fine-Pruning (Liu, Dolan-Gavitt and Garg, RAID 2018), the pruning attack CoreLocker Sec. 5.3 follows
    after AdvParams (Xue et al., IEEE TETC 2023): feed the attacker's clean data, rank the output channels
    (filters / neurons) of each pruned layer by their mean activation, prune the `ratio` least active ones
    (zero their filter and bias, kept at zero while training), then fine-tune on the same data (AdamW,
    cross-entropy; `epochs = 0` prunes only). `scope = "last"` prunes the last hidden Conv2d (Fine-Pruning's
    setting; the last hidden Linear in a model without one), `"all"` every hidden Conv2d/Linear layer."""

    name = "fine-prune"
    trains = True  # fine-tunes the pruned model
    description = "Fine-Pruning: prune the least-activated channels on clean attacker data, then fine-tune"
    defaults = {"ratio": 0.2, "fraction": 0.05, "epochs": 5, "lr": 1e-3, "scope": "all"}
    SCOPES = ("all", "last")

    def __call__(self, module, preprocess, data, seed):
        rate = float(self.params["ratio"])
        if not 0 <= rate < 1:
            raise UserError(f"fine-prune ratio must be in [0, 1), got {self.params['ratio']!r}")
        if self.params["scope"] not in self.SCOPES:
            raise UserError(f"unknown fine-prune scope {self.params['scope']!r}; valid choices: {', '.join(self.SCOPES)}")
        subset = _attacker_data(data, _fraction(self.params), seed)
        module = copy.deepcopy(module).eval()
        device = next(module.parameters()).device
        sums: dict[str, torch.Tensor] = {}
        layers: list = []
        for i in range(0, len(subset.labels), BATCH):
            x = preprocess(_rows(subset, torch.arange(i, min(i + BATCH, len(subset.labels))), device))
            layers, outputs = _hidden_layers(module, x)
            for name, mod in layers:
                out = outputs[name]
                act = out.transpose(0, 1).flatten(1).sum(1) if isinstance(mod, nn.Conv2d) else out.flatten(0, -2).sum(0)
                sums[name] = sums.get(name, 0) + act.double()
        if self.params["scope"] == "last":
            convs = [(n, m) for n, m in layers if isinstance(m, nn.Conv2d)]
            layers = (convs or layers)[-1:]
        pruned = []
        for name, mod in layers:
            n_out = mod.weight.shape[0]
            drop = torch.sort(sums[name], stable=True).indices[: round(rate * n_out)].to(mod.weight.device)
            for pname in ("weight", "bias"):
                if getattr(mod, pname, None) is not None:
                    mask = torch.ones_like(getattr(mod, pname))
                    mask[drop] = 0
                    prune.custom_from_mask(mod, pname, mask)
                    pruned.append((mod, pname))
        if int(self.params["epochs"]) > 0:

            def loss(m, x, y):
                return F.cross_entropy(m(preprocess(x)), y)

            module = train_module(module, loss, subset, subset.labels, self.params["epochs"], self.params["lr"], seed)
        for mod, pname in pruned:
            prune.remove(mod, pname)
        return module.eval()


@ATTACKS.register
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
