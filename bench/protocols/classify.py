"""Streaming classification: batches of the evaluated split through models, into cached outputs.

Shared by the image protocols (input and model authorization). A forward entry of the cache holds,
per sample, the top-1 prediction, the top-5 classes, whether the logits were finite (a model may
score a subset only, e.g. encrypted inference) and the first-layer deviation of the evaluated model
on the inputs against their clean counterpart; never a whole split of images or logits in memory
beyond these per-sample scalars. The one exception is a model that declares `whole_split = True`
(the FHE and ALGOSPEC baselines, whose inference is defined over a seeded subset or one
optimisation of the whole evaluated split, and which are small by construction): it receives the
split in one call.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterator, TYPE_CHECKING

import numpy as np
import torch
from tqdm.auto import tqdm

from bench.core.cache import ArrayCache
from bench.data import Batch
from bench.core.errors import UserError
from bench.models.adapter import ModelAdapter

if TYPE_CHECKING:  # the engine sits above the protocols: its context type is named here only
    from bench.engine.context import EvalContext

TOPK = 5
# part of every forward-cache key of these outputs: bump when what an entry holds changes meaning
# (2: first_layer_dev is the deviation of the layer's output, bias and mean included)
OUTPUTS_VERSION = 2


def outputs_identity(ctx: EvalContext, identity: dict) -> dict:
    """What the cached outputs of a model on the inputs `identity` names are: those inputs, in today's output form,
    computed at the run's precision and memory format (the forward service keys its entries by it:
    bench.core.forward; autocast or channels-last outputs never answer for float32 ones)."""
    return {**identity, "outputs": OUTPUTS_VERSION, **ctx.compute}


def check_channels(model: ModelAdapter, x: torch.Tensor) -> None:
    if x.ndim != 4 or x.shape[1] != model.preprocess.input_size[0]:  # any size: the model resizes and crops
        raise UserError(
            f"model {model.name!r} expects inputs of shape {tuple(model.preprocess.input_size)} (any height and "
            f"width: it resizes and crops) but suite data has {tuple(x.shape[1:])}; pick models for this dataset")


# part of the cache key of a model's clean first-layer norms: bump when what an entry holds changes meaning
CLEAN_NORMS_VERSION = 1


class CleanNorms:
    """Per-sample ||L(x)|| of one model's first layer on the clean evaluated split: the denominator of every
    job's first-layer deviation, the same for every job that reads this split in this space. The first job
    computes it batch by batch as it streams; the complete array goes to the forward cache (keyed by the
    model's identity, the clean inputs' identity - data, indices, encode space - the batch size and the
    device type, so a reused value has exactly the bits a recomputation would give), and every later job,
    in this process or another, reads it instead of recomputing it."""

    def __init__(self, cache, key: str, n: int):
        self.cache, self.key, self.n = cache, key, n
        entry = cache.get(key)
        norm = None if entry is None else entry.get("norm")
        if norm is not None and norm.shape == (n,):
            self.values, self.known, self.saved = torch.from_numpy(np.array(norm)), np.ones(n, dtype=bool), True
        else:
            self.values, self.known, self.saved = torch.zeros(n, dtype=torch.float32), np.zeros(n, dtype=bool), False
        self.computed = 0  # batches computed here (tests, benchmarks)

    def lookup(self, positions: np.ndarray) -> torch.Tensor | None:
        """The norms at these split positions, or None when any of them is not known yet."""
        pos = np.asarray(positions, dtype=np.int64)
        return self.values[torch.as_tensor(pos)] if self.known[pos].all() else None

    def store(self, positions: np.ndarray, norms: torch.Tensor) -> None:
        pos = np.asarray(positions, dtype=np.int64)
        self.values[torch.as_tensor(pos)] = norms.detach().to(device="cpu", dtype=torch.float32)
        self.known[pos] = True
        self.computed += 1
        if not self.saved and self.known.all():
            self.cache.put(self.key, {"norm": self.values.numpy()})
            self.saved = True


def clean_norms(ctx: EvalContext, model: ModelAdapter, clean_identity: dict) -> CleanNorms:
    """The context's store of `model`'s clean first-layer norms on the inputs `clean_identity` names (one per
    model, clean inputs, batch size and device type; read from the cache's clean-norms namespace the first time)."""
    store = ctx.memo("classify.clean_norms")
    cache = store.get(None)
    if cache is None:  # a namespace of its own beside the forward cache (whose entries are model outputs)
        cache = store[None] = ArrayCache(ctx.cache_root, "clean-norms")
    key = cache.key(model.digest, {"clean": clean_identity, "batch_size": ctx.batch_size,
                                   "device": ctx.device.type, "first_layer_clean_norms": CLEAN_NORMS_VERSION})
    if key not in store:
        store[key] = CleanNorms(cache, key, len(ctx.data))
    return store[key]


class FirstLayerDeviation:
    """Per-sample first-layer deviation ||L(x~) - L(x)|| / ||L(x)||: the relative change of the model's
    first layer's actual output L (its weights and bias, on the model's own normalised input (x - mean) / std)
    between the inputs x~ and their clean counterpart x, both through the model's resize and crop
    (float32, on the inputs' device; bench.models.first_linear.FirstLinear.output_deviation); NaN where the
    model has no first linear map or the shapes differ (e.g. a resizing attack). With `norms`, ||L(x)|| is
    computed once per clean split position and reused (`CleanNorms`)."""

    def __init__(self, model: ModelAdapter, norms: CleanNorms | None = None):
        self.model = model
        try:
            self.fl = model.first_linear().to(torch.float32)
        except UserError:
            self.fl = None
        self.norms = norms
        self._on: dict = {}

    def __call__(self, x: torch.Tensor, clean: torch.Tensor | None, positions: np.ndarray | None = None) -> np.ndarray:
        if self.fl is None or clean is None or clean.shape != x.shape:
            return np.full(len(x), np.nan)
        if x.device not in self._on:
            self._on[x.device] = self.fl.to(device=x.device)
        fl, geometry = self._on[x.device], self.model.preprocess.geometry
        clean_g = geometry(clean.float())
        norm = None
        if self.norms is not None and positions is not None:
            norm = self.norms.lookup(positions)
            if norm is None:
                norm = fl.output_norm(clean_g)
                self.norms.store(positions, norm)
            else:
                norm = norm.to(clean_g.device)
        dev = fl.output_deviation(clean_g, geometry(x.float()), clean_norm=norm)
        return dev.cpu().numpy()


@dataclass
class Accumulator:
    """Per-sample outputs of one model over a split, appended batch by batch."""

    pred: list = field(default_factory=list)
    top5: list = field(default_factory=list)
    finite: list = field(default_factory=list)
    dev: list = field(default_factory=list)

    def add(self, logits: torch.Tensor, dev: np.ndarray) -> None:
        logits = logits.float()
        self.pred.append(logits.argmax(1).cpu().numpy())
        self.top5.append(logits.topk(min(TOPK, logits.shape[1]), 1).indices.cpu().numpy().astype(np.int32))
        self.finite.append(torch.isfinite(logits).all(1).cpu().numpy())
        self.dev.append(dev)

    def result(self) -> dict[str, np.ndarray]:
        return {"pred": np.concatenate(self.pred), "top5": np.concatenate(self.top5),
                "finite": np.concatenate(self.finite), "first_layer_dev": np.concatenate(self.dev)}


def from_cache(entry: dict | None) -> dict | None:
    """A forward entry in today's form; entries written as whole logits (before streaming) still count."""
    if entry is None or "pred" in entry:
        return entry
    logits = torch.from_numpy(entry["logits"])
    acc = Accumulator()
    acc.add(logits, entry["first_layer_dev"])
    return acc.result()


def batches(ctx: EvalContext, desc: str) -> Iterator[Batch]:
    n = len(ctx.data)
    total = -(-n // ctx.batch_size)
    for batch in tqdm(ctx.data.batches(ctx.batch_size), total=total, desc=desc, unit="batch", leave=False,
                      disable=not ctx.progress or total < 2):
        yield batch


def stream(ctx: EvalContext, predictors: dict[str, ModelAdapter], deviations: dict[str, FirstLayerDeviation],
           inputs: Callable[[Batch], tuple[torch.Tensor, torch.Tensor | None]], desc: str) -> dict[str, dict]:
    """Every batch of the evaluated split through `inputs` (-> model inputs and their clean counterpart,
    on the compute device) and each predictor; returns each predictor's accumulated outputs. Forwards run
    under torch.inference_mode (and autocast at the run's precision: `EvalContext.forward_mode`), except a
    whole-split baseline's or a predictor's that sets `needs_grad` (it optimises inside predict)."""
    acc = {label: Accumulator() for label in predictors}
    whole = {label: ([], []) for label, m in predictors.items() if getattr(m, "whole_split", False)}
    for batch in batches(ctx, desc):
        x, clean = inputs(batch)
        for label, model in predictors.items():
            check_channels(model, x)
            if label in whole:  # a baseline that needs the whole split in one call (bounded by its own budget)
                whole[label][0].append(x.cpu()), whole[label][1].append(None if clean is None else clean.cpu())
                continue
            if getattr(model, "needs_grad", False):  # a predictor that optimises inside predict (its own no_grad)
                logits = model.predict(x, batch_size=ctx.batch_size)
            else:
                with ctx.forward_mode():  # inference_mode (+ autocast at the run's precision)
                    logits = model.predict(ctx.model_input(x), batch_size=ctx.batch_size)
            with torch.inference_mode():  # the deviation: float32, no autocast
                dev = deviations[label](x, clean, batch.positions)
            acc[label].add(logits, dev)
    for label, (xs, cleans) in whole.items():
        x = torch.cat(xs)
        clean = None if any(c is None for c in cleans) else torch.cat(cleans)
        acc[label].add(predictors[label].predict(x, batch_size=ctx.batch_size), deviations[label](x, clean))
    return {label: a.result() for label, a in acc.items()}


def score(out: dict, labels: torch.Tensor) -> tuple[dict, int]:
    """top-1 and top-3 (percent; top-3 from the kept top-5 classes, None under 3 classes) over the samples
    with finite logits, the mean first-layer deviation, and n."""
    scored = out["finite"].astype(bool)
    y = labels.numpy()[scored]
    dev = out["first_layer_dev"]
    top1 = float((out["pred"][scored] == y).mean() * 100) if scored.any() else None
    metrics = {"top1": top1, "first_layer_dev": None if np.isnan(dev).all() else float(np.nanmean(dev))}
    metrics["top3"] = top_k(out, y, scored, 3)
    return metrics, int(scored.sum())


def top_k(out: dict, y: np.ndarray, scored: np.ndarray, k: int) -> float | None:
    """Top-k accuracy (percent) from the kept top-5 classes; None for k > 5 or fewer than k classes."""
    if not scored.any() or out["top5"].shape[1] < k:
        return None
    return float((out["top5"][scored][:, :k] == y[:, None]).any(1).mean() * 100)
