"""ALGOSPEC baseline (Liu et al., USENIX Security 2024) for networks, as the NE paper instantiates it.

The authorized algorithm is turned into a polynomial P: every nonlinear operation of the network
(ReLU, GELU, softmax, LayerNorm, 2x2 max-pool) is replaced by a Chebyshev surrogate of a given
degree fitted over the input range each call site sees on probe data (baselines.polynomial).
The data owner then releases, for each record x, an *alternative* x' that P maps to P(x): found
by optimization (Adam on ||P(x') - P(x)||^2 from a seeded uniform-noise start, x' kept in
[0, 1]). Authorized = P on the alternatives; unauthorized = the exact (non-polynomial) network
and the suite's other models on the same alternatives. The paper's own setting (Naive Bayes on
tabular data) is in baselines.algospec_nb.
"""

from __future__ import annotations

import hashlib
import time
from functools import cached_property

import torch
import torch.nn as nn

from baselines.polynomial import PolynomialNetwork, fit_surrogates
from bench.defenses.base import DEFENSES, Evaluation, ModelDefense, Protected
from bench.core.errors import UserError
from bench.models.adapter import ModelAdapter, weights_digest


class AlternativeRelease(nn.Module):
    """The data owner's release: x -> x' with P(x') ~= P(x), cached per input batch."""

    def __init__(self, poly: PolynomialNetwork, preprocess, params: dict, seed: int):
        super().__init__()
        self.poly, self.preprocess, self.params, self.seed = poly, preprocess, params, seed
        self.cache: dict[str, tuple[torch.Tensor, dict]] = {}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.release(x)[0]

    def release(self, x: torch.Tensor) -> tuple[torch.Tensor, dict]:
        key = hashlib.sha256(x.numpy().tobytes()).hexdigest()
        if key not in self.cache:
            self.cache[key] = self._optimize(x)
        return self.cache[key]

    def _optimize(self, x: torch.Tensor) -> tuple[torch.Tensor, dict]:
        p, t0 = self.params, time.perf_counter()
        shared = [q for q in self.poly.parameters() if q.requires_grad]  # the authorized model's own weights
        for q in shared:
            q.requires_grad_(False)
        try:
            return self._search(x, p, t0)
        finally:  # later jobs fine-tune the same model (adaptation, fine-tuning attacks): leave it trainable
            for q in shared:
                q.requires_grad_(True)

    def _search(self, x: torch.Tensor, p: dict, t0: float) -> tuple[torch.Tensor, dict]:
        """Adam on ||P(x') - P(x)||^2 / mean(P(x)^2). A polynomial of high degree on a deep network can overflow on
        some records (its output, or its gradient at x', is not finite): such a record keeps its last finite x' (its
        start if it never had one) and is counted in `diverged`, so the others are searched exactly as when every
        value is finite (the same operations, bit for bit) and the run goes on instead of feeding NaN to a model."""
        with torch.no_grad():
            target = self.poly(self.preprocess(x))
        ok_target = torch.isfinite(target).all(dim=1)
        g = torch.Generator().manual_seed(self.seed)
        alt = torch.rand(x.shape, generator=g).requires_grad_(True)
        opt = torch.optim.Adam([alt], lr=p["lr"])
        if bool(ok_target.all()):
            scale = target.pow(2).mean().clamp_min(1e-6)
        else:  # the scale of the records P maps to finite outputs (no record's: 1)
            scale = target[ok_target].pow(2).mean().clamp_min(1e-6) if bool(ok_target.any()) else torch.tensor(1.0)
        diverged = torch.zeros(len(x), dtype=torch.bool)
        for _ in range(p["steps"]):
            last = alt.detach().clone()
            with torch.enable_grad():  # adapters predict under no_grad
                diff = self.poly(self.preprocess(alt)) - target
                loss = diff.pow(2).mean() / scale
                if not bool(torch.isfinite(loss)):  # only the finite records' terms (same normalisation)
                    per = diff.pow(2).mean(dim=1)
                    finite = torch.isfinite(per)
                    diverged |= ~finite
                    loss = per[finite].sum() / (len(x) * scale) if bool(finite.any()) else None
                opt.zero_grad()
                if loss is not None:
                    loss.backward()
            if loss is None:
                break
            opt.step()
            with torch.no_grad():
                alt.clamp_(0, 1)
                bad = ~torch.isfinite(alt).flatten(1).all(dim=1)
                if bool(bad.any()):  # a record whose gradient overflowed keeps its last finite alternative
                    diverged |= bad
                    alt[bad] = last[bad]
        alt = alt.detach()
        with torch.no_grad():
            got = self.poly(self.preprocess(alt))
        rel = (got - target).norm(dim=1) / target.norm(dim=1).clamp_min(1e-9)
        stats = {
            "release_ms_per_sample": (time.perf_counter() - t0) * 1000 / len(x),
            "match_rel_error": float(rel.mean()) if bool(torch.isfinite(rel).all()) else (  # over the finite records
                float(rel[torch.isfinite(rel)].mean()) if bool(torch.isfinite(rel).any()) else None),
            "argmax_agreement": float((got.argmax(1) == target.argmax(1)).float().mean() * 100),
            "pixel_distance": float((alt - x).abs().mean()),
        }
        if bool(diverged.any()) or not bool(ok_target.all()):
            stats["diverged"] = int((diverged | ~ok_target).sum())  # records P could not match (non-finite values)
        return alt, stats


class OnAlternatives(ModelAdapter):
    """`inner` (the polynomial pipeline or any other model) evaluated on the released alternatives."""

    whole_split = True  # optimizes alternatives for the whole evaluated split at once (one seeded start)

    def __init__(self, name: str, inner: ModelAdapter, release: AlternativeRelease, cost: dict):
        super().__init__(name, inner.module, inner.preprocess, inner.arch, inner.source)
        self.inner, self.release, self.cost = inner, release, cost

    @cached_property
    def identity(self) -> dict:
        """The inner model and the release (its parameters, seed and polynomial) it reads."""
        return {"inner": self.inner.identity, "algospec": self.release.params, "seed": self.release.seed,
                "polynomial_of": weights_digest(self.release.poly.module)}

    @torch.no_grad()
    def predict(self, x: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
        self.check_input(x)
        alt, stats = self.release.release(x)
        self.cost.update(stats)
        return self.inner.predict(alt, batch_size)


@DEFENSES.register
class AlgoSpec(ModelDefense):
    name = "algospec"
    trains = True  # fits its polynomial surrogates by optimization
    board = "baselines"  # ranked on its own board, beside NE Table 3
    description = "ALGOSPEC: polynomial surrogates of the network; released alternatives only the polynomial reads"
    defaults = {"degree": 8, "depth": 0, "probe": 256, "margin": 0.1, "steps": 150, "lr": 0.05}

    def __init__(self, **params):
        super().__init__(**params)
        p = self.params
        if not isinstance(p["degree"], int) or p["degree"] < 2:
            raise UserError(f"defense 'algospec': degree must be a whole number >= 2 (got {p['degree']!r})")
        if not isinstance(p["depth"], int) or p["depth"] < 0:
            raise UserError(f"defense 'algospec': depth must be 0 (all sites) or the number of sites to replace "
                            f"(got {p['depth']!r})")

    def protect(self, model: ModelAdapter, train, seed: int) -> Protected:
        p, t0 = self.params, time.perf_counter()
        probe = model.preprocess(train.images[: p["probe"]])
        poly = fit_surrogates(model.module, probe, p["degree"], p["depth"], p["margin"])
        summary = poly.summary()
        if not summary["sites"]:
            raise UserError(f"defense 'algospec': model {model.name!r} has no nonlinear operation it can replace")
        cost = {
            "protect_ms": (time.perf_counter() - t0) * 1000,
            "retraining": False,
            "architecture_changed": True,
            "notes": f"{summary['sites_replaced']} of {summary['sites']} nonlinear sites {summary['site_kinds']} "
                     f"replaced by degree-{p['degree']} Chebyshev surrogates",
            **{k: summary[k] for k in ("sites", "sites_replaced", "max_fit_error")},
        }
        release = AlternativeRelease(poly, model.preprocess, dict(p), seed)
        return Protected(release, {"poly": poly}, cost)

    def authorized(self, protected: Protected, model: ModelAdapter) -> ModelAdapter:
        inner = ModelAdapter(f"{model.name}[poly]", protected.key["poly"], model.preprocess, model.arch, model.source)
        return OnAlternatives(f"{model.name}[algospec-d{self.params['degree']}]", inner, protected.released,
                              protected.cost)

    def evaluations(self, protected: Protected, model: ModelAdapter, others: dict) -> list[Evaluation]:
        release, cost = protected.released, protected.cost
        auth = self.authorized(protected, model)
        exact = OnAlternatives(f"{model.name}[exact]", model, release, cost)
        return [Evaluation(auth.name, auth, "authorized"), Evaluation(exact.name, exact, "unauthorized")] + [
            Evaluation(label, OnAlternatives(label, a, release, cost), "unauthorized") for label, a in others.items()
        ]
