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
from typing import Callable, Iterator

import numpy as np
import torch
from tqdm.auto import tqdm

from bench.core.context import EvalContext
from bench.data import Batch
from bench.errors import UserError
from bench.models.adapter import ModelAdapter

TOPK = 5
# part of every forward-cache key of these outputs: bump when what an entry holds changes meaning
# (2: first_layer_dev is the deviation of the layer's output, bias and mean included)
OUTPUTS_VERSION = 2


def outputs_identity(identity: dict) -> dict:
    """What the cached outputs of a model on the inputs `identity` names are: those inputs, in today's output form
    (the forward service keys its entries by it: bench.core.forward)."""
    return {**identity, "outputs": OUTPUTS_VERSION}


def check_channels(model: ModelAdapter, x: torch.Tensor) -> None:
    if x.ndim != 4 or x.shape[1] != model.preprocess.input_size[0]:  # any size: the model resizes and crops
        raise UserError(
            f"model {model.name!r} expects inputs of shape {tuple(model.preprocess.input_size)} (any height and "
            f"width: it resizes and crops) but suite data has {tuple(x.shape[1:])}; pick models for this dataset")


class FirstLayerDeviation:
    """Per-sample first-layer deviation ||L(x~) - L(x)|| / ||L(x)||: the relative change of the model's
    first layer's actual output L (its weights and bias, on the model's own normalised input (x - mean) / std)
    between the inputs x~ and their clean counterpart x, both through the model's resize and crop
    (float32, on the inputs' device; bench.models.first_linear.FirstLinear.output_deviation); NaN where the
    model has no first linear map or the shapes differ (e.g. a resizing attack)."""

    def __init__(self, model: ModelAdapter):
        self.model = model
        try:
            self.fl = model.first_linear().to(torch.float32)
        except UserError:
            self.fl = None
        self._on: dict = {}

    def __call__(self, x: torch.Tensor, clean: torch.Tensor | None) -> np.ndarray:
        if self.fl is None or clean is None or clean.shape != x.shape:
            return np.full(len(x), np.nan)
        if x.device not in self._on:
            self._on[x.device] = self.fl.to(device=x.device)
        geometry = self.model.preprocess.geometry
        dev = self._on[x.device].output_deviation(geometry(clean.float()), geometry(x.float()))
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
    on the compute device) and each predictor; returns each predictor's accumulated outputs."""
    acc = {label: Accumulator() for label in predictors}
    whole = {label: ([], []) for label, m in predictors.items() if getattr(m, "whole_split", False)}
    for batch in batches(ctx, desc):
        x, clean = inputs(batch)
        for label, model in predictors.items():
            check_channels(model, x)
            if label in whole:  # a baseline that needs the whole split in one call (bounded by its own budget)
                whole[label][0].append(x.cpu()), whole[label][1].append(None if clean is None else clean.cpu())
                continue
            acc[label].add(model.predict(x, batch_size=ctx.batch_size), deviations[label](x, clean))
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
