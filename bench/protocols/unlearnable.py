"""Unlearnable examples: the `train-on-data` protocol (training-time data protection).

One job = (data defense, parameter point, trial, countermeasure). The defense protects the suite's training
split (`DataDefense.protect_data`, bench.unlearnable.methods); each architecture of the entry's `archs` (digits
zoo families) is trained from scratch on the protected images under the countermeasure (standard training,
ISS-style preprocessing, cutout, mixup, adversarial training: attacks of kind input or train, see
bench.unlearnable.countermeasures) and scored by
top-1 accuracy on the suite's clean evaluated split. `clean-data` is the reference row (training on the data as
is). Lower accuracy is better for the defense; its board ranks by the worst case (the highest accuracy) over
{none} + the suite's [standard_attacks] train-on-data list.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from bench.attacks.base import attack_identity
from bench.core.cache import digest
from bench.core.metrics import UNLEARNABLE_METRICS
from bench.core.entry import Entry, Key, attacks_key, integer, key, list_of, number, string, trials_key
from bench.core.types import Job, Measurement
from bench.data.base import Split
from bench.defenses import get_defense
from bench.core.errors import UserError
from bench.models.zoo import FAMILIES
from bench.protocols.base import PROTOCOLS, Protocol, grid, with_cells
from bench.reports.boards import Z95, BoardSpec
from bench.unlearnable.countermeasures import get_countermeasure, top1, train_victim
from bench.unlearnable.methods import PROTOCOL, DataDefense, split_norm

ARCHS = Key({"type": "array", "items": {"enum": list(FAMILIES)}, "minItems": 1},
            "a non-empty list of digits zoo families (" + ", ".join(FAMILIES) + ")")


def _score(cells: list[dict], standard: tuple[str, ...]):
    """Board values of one defense: mean top-1 over the trained architectures per countermeasure, and the worst
    case (the highest) over {none} + the standard countermeasures."""
    values, per_model, measured, missing = {}, {}, {}, []
    for attack in ("none", *standard):
        part = [c for c in cells if c["attack"] == attack]
        if not part:
            missing.append(attack)
            continue
        measured[attack] = sum(c["metrics"]["top1"] for c in part) / len(part)
        values["top1" if attack == "none" else f"top1[{attack}]"] = measured[attack]
        for c in part:
            per_model.setdefault(c["evaluated"], {})[attack] = c["metrics"]["top1"]
    worst = max(measured, key=measured.get) if measured else ""
    values["worst_top1"] = None if missing else measured[worst]
    return values, per_model, worst, tuple(missing)


def _ci(row) -> float | None:
    """Half-width of a normal 95% interval of worst_top1 from test-set sampling: the mean over the k trained
    architectures of their top-1 rates on n test images under the worst countermeasure."""
    n = min(row.n) if row.n else 0
    rates = [m.get(row.worst_attack) for m in row.per_model.values()]
    if n < 1 or not rates or any(r is None for r in rates) or row.values.get("worst_top1") is None:
        return None
    var = sum((r / 100) * (1 - r / 100) / n for r in rates)
    return 100.0 * Z95 * math.sqrt(var) / len(rates)


def _columns(row) -> dict:
    """The board's readable columns: accuracies of models trained on the protected data (lower is better)."""
    return {"top-1 (standard training)": row.values.get("top1"),
            "worst top-1 over countermeasures": row.values.get("worst_top1"), "± 95% CI": _ci(row),
            "worst countermeasure": row.worst_attack or "-"}


DEFINITION = ("Train-on-data: top-1 (standard training) = test top-1 of networks trained from scratch on the protected "
              "training data, mean over the trained architectures; worst top-1 over countermeasures = the highest of "
              "that mean over {none} + the standard countermeasures (the data user's best training-time defense); "
              "lower is better for the data defense, and the clean-data row is what training on unprotected data gives.")

BOARD = BoardSpec(title="Unlearnable examples (test top-1 of models trained on the protected data)",
                  headline="worst_top1", tiebreak="top1", score=_score, scored=lambda cells: cells, order=5,
                  ranking=" then the top-1 of standard training (lower is better)", higher_is_better=False,
                  definition=DEFINITION, columns=_columns,
                  sweep_columns=lambda row: {"top-1 (standard training)": row.values.get("top1")})


@dataclass(frozen=True, kw_only=True)
class DataEntry(Entry):
    """A [[defenses]] entry of the train-on-data protocol: the architectures trained on the protected data, their
    training budget, the countermeasures (`attacks`) and trials."""

    archs: list = key(ARCHS, factory=lambda: ["mlp", "cnn", "fhe"])
    epochs: int = key(integer(1), 5)
    lr: float = key(number(0), 2e-3)
    attacks: list = attacks_key()
    trials: int = trials_key()


@PROTOCOLS.register
class TrainOnData(Protocol):
    name = PROTOCOL
    description = ("unlearnable examples: test accuracy of models trained on protected training data, worst case "
                   "over training-time countermeasures, beside training on clean data")
    entry = DataEntry
    boards = {PROTOCOL: BOARD}
    check_board = PROTOCOL
    check_metrics = UNLEARNABLE_METRICS

    def plan(self, ctx, entry):
        cls = get_defense(entry.name)
        if not issubclass(cls, DataDefense):
            raise UserError(f"defense {entry.name!r} is not a data defense; the {self.name} protocol takes "
                            "clean-data, em, rem, tap, lsp or a bench.unlearnable.methods.DataDefense subclass")
        for attack in entry.attacks:
            get_countermeasure(attack)  # validates name and parameters
        jobs = []
        for point in grid(entry.sweep):
            params = cls(**{**entry.params, **point}).params
            for trial in range(entry.trials):
                for attack in entry.attacks:
                    jobs.append(with_cells(ctx, Job(
                        protocol=self.name, defense=entry.name, params=params,
                        point={**point, "epochs": entry.epochs, "lr": entry.lr}, release="data", attack=attack,
                        authorized="", evaluated=tuple(entry.archs), trial=trial, group=f"{entry.name}|{trial}")))
        return jobs

    def protected(self, ctx, job) -> tuple:
        """Protect once per (defense, params, trial): jobs that differ only in the countermeasure reuse it."""
        memo = ctx.memo("train-on-data.protected")
        key_ = digest([job.defense, job.params, job.trial])
        if memo.get("key") != key_:
            train = ctx.train_data
            protected = get_defense(job.defense)(**job.params).protect_data(train, ctx.seed(job.trial))
            memo.update(key=key_, value=(train, protected))
        return memo["value"]

    def run(self, ctx, job):
        todo = [a for a, c in zip(job.evaluated, job.cells) if c not in ctx.done]
        if not todo:
            return []
        train, protected = self.protected(ctx, job)
        data = Split(f"{train.name}[{job.defense}]", protected.images, train.labels, train.indices, train.num_classes)
        norm = split_norm(train)  # the data user's normalization: statistics of the clean split (the zoo's)
        counter = get_countermeasure(job.attack)
        test = ctx.data
        seed = ctx.seed(job.trial)
        identity = {"data": getattr(test, "identity", test.name), "train": digest(protected.images.numpy().tobytes()),
                    **attack_identity(job.attack), "seed": seed}
        out = []
        for arch in todo:
            module = train_victim(arch, data, norm, counter, int(job.point["epochs"]), float(job.point["lr"]), seed)
            out.append(Measurement(
                evaluated=arch, role="scored", arch={"authorized": "", "evaluated": arch},
                metrics={"top1": top1(module, norm, test.images, test.labels),
                         "train_top1": top1(module, norm, protected.images, train.labels)},
                cost=protected.cost, n=len(test.labels), input_digest=digest(identity)))
        return out

    @classmethod
    def check_cells(cls, rows):
        groups: dict[str, list[float]] = {}
        for r in rows:
            groups.setdefault(f"{r['defense']}|{sorted(r['point'].items())}|{r['attack']}|{r['evaluated']}",
                              []).append(r["metrics"]["top1"])
        return [(k, "top1", sum(v) / len(v), True) for k, v in groups.items()]

    def reports(self, rows, out, cfg):
        archs = sorted({r["evaluated"] for r in rows})
        lines = ["# Unlearnable examples: test top-1 (%) of models trained on the protected data (measured by "
                 "authbench; lower is better for the defense)", "",
                 "| defense | countermeasure | " + " | ".join(archs) + " | mean | measured L-inf (x255) |",
                 "|---|---|" + "---|" * (len(archs) + 2)]
        groups: dict[tuple, list] = {}
        for r in rows:
            groups.setdefault((r["defense"], digest(r["params"]), r["attack"]), []).append(r)
        for (defense, _, attack), part in groups.items():
            by = {}
            for r in part:
                by.setdefault(r["evaluated"], []).append(r["metrics"]["top1"])
            means = {a: sum(v) / len(v) for a, v in by.items()}
            linf = (part[0].get("cost") or {}).get("linf")
            lines.append(f"| {defense} | {attack} | " + " | ".join(f"{means[a]:.1f}" if a in means else "-" for a in archs)
                         + f" | {sum(means.values()) / len(means):.1f} | "
                         + (f"{linf * 255:.1f}" if linf is not None else "-") + " |")
        path = Path(out) / "unlearnable.md"
        path.write_text("\n".join(lines) + "\n")
        return [path]

    def summary(self, rows, reports):
        mine = [r for r in rows if r["protocol"] == self.name]
        if not mine:
            return []
        lowest = min(mine, key=lambda r: r["metrics"]["top1"])
        return [f"{self.name}: {len(mine)} cells; lowest test top-1 {lowest['metrics']['top1']:.1f}% "
                f"({lowest['defense']}, {lowest['evaluated']}, countermeasure {lowest['attack']})"]
