"""A third-party protocol, written as a user would in their own package: calibration of released probabilities.

A new scoring family (not a copy of a built-in): a *calibrator* defense post-processes each evaluated
model's logits into the probabilities a service releases; the protocol scores them by expected calibration
error (ECE, `bins` equal-width confidence bins, the entry's own key) and negative log-likelihood on the
second half of the evaluated split, the calibrator being fitted on the first half. An input attack on the
test images shows how calibration survives distribution shift. Boards rank calibrators by the worst-case
ECE over {none} + the standard attacks (lower is better); `check` compares each (calibrator, attack)'s
mean ECE.

It is registered as the `authbench.protocols` entry point "calibration" (tests/test_protocols.py installs
that entry point), and its defenses are named by path ('calibration_protocol:Temperature'). Nothing in
bench/ names it. docs/adding-a-protocol.md walks through this file.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from bench.attacks import attack_label, get_attack
from bench.attacks.base import apply_attack
from bench.cache import digest
from bench.core.entry import Entry, attacks_key, integer, key, models_key
from bench.core.types import Job, Measurement
from bench.defenses import get_defense
from bench.defenses.base import Defense
from bench.errors import UserError
from bench.protocols import Protocol
from bench.protocols.base import grid, with_cells
from bench.reports.boards import BoardSpec

NAME = "calibration"


# -- the defenses of the family: calibrators ----------------------------------------------------------
class Calibrator(Defense):
    """Turns logits into released probabilities; `fit` sees logits and labels of the calibration half."""

    protocol = NAME

    def fit(self, logits: torch.Tensor, labels: torch.Tensor) -> None:
        pass

    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        return logits.softmax(1)


class Softmax(Calibrator):
    name = "softmax"
    description = "releases the model's softmax as is (the uncalibrated baseline)"


class Temperature(Calibrator):
    name = "temperature"
    description = "temperature scaling: one temperature per model, fitted by grid search on NLL (Guo et al. 2017)"
    defaults = {"grid": 41}

    def fit(self, logits, labels):
        temperatures = torch.logspace(-1, 1, int(self.params["grid"]))
        nll = [torch.nn.functional.cross_entropy(logits / t, labels).item() for t in temperatures]
        self.temperature = float(temperatures[min(range(len(nll)), key=nll.__getitem__)])

    def probabilities(self, logits):
        return (logits / self.temperature).softmax(1)


# -- the scores -----------------------------------------------------------------------------------------
def ece(probs: torch.Tensor, labels: torch.Tensor, bins: int) -> float:
    """Expected calibration error: sum over equal-width confidence bins of |accuracy - confidence| x share."""
    confidence, pred = probs.max(1)
    correct = (pred == labels).float()
    edges = torch.linspace(0, 1, bins + 1)
    total = 0.0
    for lo, hi in zip(edges[:-1], edges[1:]):
        inside = (confidence > lo) & (confidence <= hi)
        if inside.any():
            total += float(inside.float().mean()) * abs(float(correct[inside].mean()) - float(confidence[inside].mean()))
    return total


def _score(cells: list[dict], standard: tuple[str, ...]):
    """Board values of one calibrator: mean ECE per attack over the evaluated models, the worst case."""
    per_model, missing, values = {}, [], {}
    for attack in ("none", *standard):
        part = [c["metrics"]["ece"] for c in cells if c["attack"] == attack]
        if not part:
            missing.append(attack)
            continue
        values["ece" if attack == "none" else f"ece[{attack}]"] = sum(part) / len(part)
        for c in cells:
            if c["attack"] == attack:
                per_model.setdefault(c["evaluated"], {})[attack] = c["metrics"]["ece"]
    measured = {a: values["ece" if a == "none" else f"ece[{a}]"] for a in ("none", *standard) if a not in missing}
    worst = max(measured, key=measured.get) if measured else ""
    values["worst_ece"] = None if missing else measured[worst]
    return values, per_model, worst, tuple(missing)


BOARD = BoardSpec(title="Calibration of released probabilities", headline="worst_ece", tiebreak="ece", score=_score,
                  scored=lambda cells: cells, decimals=4, ranking=" then the clean ECE (lower is better)",
                  higher_is_better=False,
                  definition="Calibration: ece[A] = expected calibration error of the released probabilities after "
                             "attack A, mean over the evaluated models; worst_ece = max over A in {none} + the standard "
                             "attacks (lower is better).")


# -- the protocol ----------------------------------------------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class CalibrationEntry(Entry):
    """A [[defenses]] entry of the calibration protocol: its bins, attacks and models."""

    bins: int = key(integer(2), 10)
    attacks: list = attacks_key()
    models: list = models_key()


class Calibration(Protocol):
    name = NAME
    description = "calibration of released probabilities: ECE and NLL of each model, worst case over input attacks"
    entry = CalibrationEntry
    image_models = True
    boards = {NAME: BOARD}
    check_board = NAME
    check_metrics = {"ece": "lower"}

    def plan(self, ctx, entry):
        cls = get_defense_class(entry.name)
        for attack in entry.attacks:
            get_attack(attack)  # validates
        evaluated = tuple(m for m in ctx.evaluated if not entry.models or m in entry.models)
        return [with_cells(ctx, Job(protocol=self.name, defense=entry.name, params=cls(**{**entry.params, **p}).params,
                                    point={"bins": entry.bins, **p}, release="probabilities", attack=attack,
                                    authorized="", evaluated=evaluated))
                for p in grid(entry.sweep) for attack in entry.attacks]

    def run(self, ctx, job):
        attack = get_attack(job.attack)
        seed = ctx.seed(job.trial)
        identity = {"data": ctx.data.identity, "attack": attack_label(job.attack), "seed": seed, "logits": 1}
        models = {e: ctx.model(e) for e, c in zip(job.evaluated, job.cells) if c not in ctx.done}

        def compute(todo):  # logits of the models not cached, batch by batch
            parts = {e: [] for e in todo}
            for batch in ctx.data.batches(ctx.batch_size):
                x = batch.images.to(ctx.device)
                if attack_label(job.attack) != "none":
                    x = apply_attack(attack, x, seed, batch.positions)
                for e in todo:
                    parts[e].append(models[e].predict(x, batch_size=ctx.batch_size).float().cpu())
            return {e: {"logits": torch.cat(p).numpy()} for e, p in parts.items()}

        outputs = ctx.forwards.outputs({e: m.digest for e, m in models.items()}, identity, compute)
        labels = ctx.data.labels
        half = len(labels) // 2
        out = []
        for e, model in models.items():
            logits = torch.from_numpy(outputs[e]["logits"])
            calibrator = get_defense_class(job.defense)(**job.params)
            calibrator.fit(logits[:half], labels[:half])
            probs = calibrator.probabilities(logits[half:])
            nll = float(torch.nn.functional.nll_loss(probs.clamp_min(1e-12).log(), labels[half:]))
            top1 = float((probs.argmax(1) == labels[half:]).float().mean()) * 100
            out.append(Measurement(evaluated=e, role="scored", arch={"authorized": "", "evaluated": model.arch},
                                   metrics={"ece": ece(probs, labels[half:], int(job.point["bins"])), "nll": nll,
                                            "top1": top1},
                                   n=len(labels) - half, model_digest=model.digest, input_digest=digest(identity)))
        return out

    @classmethod
    def check_cells(cls, rows):
        groups: dict[str, list[float]] = {}
        for r in rows:
            groups.setdefault(f"{r['defense']}|{sorted(r['point'].items())}|{r['attack']}", []).append(r["metrics"]["ece"])
        return [(k, "ece", sum(v) / len(v), False) for k, v in groups.items()]

    def reports(self, rows, out, cfg):
        lines = ["# Calibration (measured by authbench)", "", "| calibrator | attack | model | ECE | NLL | top-1 |",
                 "|---|---|---|---|---|---|"]
        lines += [f"| {r['defense']} | {r['attack']} | {r['evaluated']} | {r['metrics']['ece']:.4f} | "
                  f"{r['metrics']['nll']:.4f} | {r['metrics']['top1']:.1f} |" for r in rows]
        path = Path(out) / "calibration.md"
        path.write_text("\n".join(lines) + "\n")
        return [path]

    def summary(self, rows, reports):
        mine = [r for r in rows if r["protocol"] == self.name]
        worst = max(mine, key=lambda r: r["metrics"]["ece"]) if mine else None
        return [f"calibration: {len(mine)} cells; worst ECE {worst['metrics']['ece']:.4f} ({worst['defense']}, "
                f"{worst['evaluated']}, attack {worst['attack']})"] if worst else []


def get_defense_class(name: str) -> type[Calibrator]:
    cls = get_defense(name)
    if not issubclass(cls, Calibrator):
        raise UserError(f"defense {name!r} is not a calibrator (calibration_protocol.Calibrator); it cannot run in "
                        f"the {NAME} protocol")
    return cls
