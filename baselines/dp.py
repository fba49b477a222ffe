"""DP baseline: DP-SGD training (Opacus) of the authorized architecture at a target (epsilon, delta).

DP limits what the released model leaks about its training data; it restricts nobody's use of
the data. So the authorized row is the DP model's accuracy and every other model of the suite is
scored, unchanged, on the same released (clean) data as the unauthorized rows.
Opacus cannot train BatchNorm (per-sample gradients mix samples): `ModuleValidator.fix` swaps it
for GroupNorm, and nn.MultiheadAttention for Opacus' DPMultiheadAttention; both are recorded as
an architecture change.
"""

from __future__ import annotations

import copy
import time
import warnings

import torch
import torch.nn as nn
import torch.nn.functional as F

from bench.defenses.base import DEFENSES, Evaluation, ModelDefense, Protected
from bench.errors import UserError, install_hint
from bench.models.adapter import ModelAdapter
from bench.models.zoo import FAMILIES


def _opacus():
    try:
        import opacus
        from opacus.validators import ModuleValidator
    except ImportError:
        raise UserError(f"defense 'dp' needs Opacus: {install_hint('dp')} (opacus==1.6.*)") from None
    return opacus, ModuleValidator


def fresh_module(model: ModelAdapter, seed: int) -> nn.Module:
    """An untrained module of the model's architecture (zoo class, else a re-initialised copy)."""
    torch.manual_seed(seed)
    if model.arch.startswith("zoo/"):
        return FAMILIES[model.arch.split("/", 1)[1]][0]()
    module = copy.deepcopy(model.module)
    for m in module.modules():
        if hasattr(m, "reset_parameters"):
            m.reset_parameters()
    return module


def _swaps(before: nn.Module, after: nn.Module) -> list[str]:
    """'Old -> New' for every submodule Opacus replaced (matched by name)."""
    new = {name: type(m).__name__ for name, m in after.named_modules()}
    return sorted({f"{type(m).__name__} -> {new[name]}" for name, m in before.named_modules()
                   if name in new and type(m).__name__ != new[name]})


@DEFENSES.register
class DPSGD(ModelDefense):
    name = "dp"
    trains = True
    board = "baselines"  # ranked on its own board, beside NE Table 3
    description = "DP-SGD (Opacus) retraining of the authorized architecture at a target epsilon; restricts no one"
    defaults = {"epsilon": 3.0, "delta": 1e-5, "epochs": 15, "max_grad_norm": 1.0, "lr": 2e-3, "batch_size": 128}

    def protect(self, model: ModelAdapter, train, seed: int) -> Protected:
        with warnings.catch_warnings():  # Opacus's notes on its accountant's alpha range and backward hooks: not
            warnings.filterwarnings("ignore", message="Optimal order is the largest alpha")  # the user's to act on
            warnings.filterwarnings("ignore", message="Full backward hook is firing")
            warnings.filterwarnings("ignore", message="Secure RNG turned off")
            return self._protect(model, train, seed)

    def _protect(self, model: ModelAdapter, train, seed: int) -> Protected:
        opacus, validator = _opacus()
        p, t0 = self.params, time.perf_counter()
        module = fresh_module(model, seed)
        fixed = validator.fix(copy.deepcopy(module)).train()
        problems = validator.validate(fixed, strict=False)
        if problems:
            raise UserError(f"defense 'dp': Opacus cannot train {model.arch!r}: {problems[0]}")
        swaps = _swaps(module, fixed)
        data = torch.utils.data.TensorDataset(model.preprocess(train.images), train.labels)
        gen = torch.Generator().manual_seed(seed)
        loader = torch.utils.data.DataLoader(data, batch_size=p["batch_size"], shuffle=True, generator=gen)
        opt = torch.optim.Adam(fixed.parameters(), lr=p["lr"])
        engine = opacus.PrivacyEngine(accountant="rdp")
        torch.manual_seed(seed)  # Opacus draws its noise from the global generator
        private, opt, loader = engine.make_private_with_epsilon(
            module=fixed, optimizer=opt, data_loader=loader, target_epsilon=p["epsilon"],
            target_delta=p["delta"], epochs=p["epochs"], max_grad_norm=p["max_grad_norm"],
        )
        for _ in range(p["epochs"]):
            for xb, yb in loader:
                if len(xb) == 0:  # Poisson sampling can draw an empty batch
                    continue
                opt.zero_grad()
                F.cross_entropy(private(xb), yb).backward()
                opt.step()
        released = private._module.eval()
        protect_ms = (time.perf_counter() - t0) * 1000
        x = model.preprocess(train.images[:64])
        with torch.no_grad():
            t1 = time.perf_counter()
            released(x)
            per_sample = (time.perf_counter() - t1) * 1000 / len(x)
        size = sum(t.numel() * t.element_size() for t in released.state_dict().values())
        cost = {
            "protect_ms": protect_ms,
            "retraining": True,
            "architecture_changed": bool(swaps),
            "notes": "; ".join(swaps) or "architecture unchanged",
            "epsilon_target": p["epsilon"],
            "epsilon_achieved": float(engine.get_epsilon(p["delta"])),
            "delta": p["delta"],
            "artifact_bytes": size,
            "memory_bytes": size,
            "time_per_sample_ms": per_sample,
        }
        return Protected(released, {}, cost)

    def authorized(self, protected: Protected, model: ModelAdapter) -> ModelAdapter:
        eps = protected.cost["epsilon_target"]
        return ModelAdapter(f"{model.name}[dp-eps{eps:g}]", protected.released, model.preprocess, model.arch, model.source)

    def evaluations(self, protected: Protected, model: ModelAdapter, others: dict) -> list[Evaluation]:
        auth = self.authorized(protected, model)
        return [Evaluation(auth.name, auth, "authorized")] + [
            Evaluation(label, adapter, "unauthorized") for label, adapter in others.items()
        ]
