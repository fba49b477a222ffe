"""Reference files `authbench check` compares fresh results with, and the tolerance rule they state.

A reference (`authbench leaderboard freeze RESULTS --out FILE`) holds one *cell* per (board, row key,
metric) of the run's boards: each protocol declares the board `check` compares its rows on, its metrics
and how its cells are computed (`Protocol.check_board`, `check_metrics`, `check_cells`: the image
protocols' leaderboard, the ownership board's AUC and TPR@1%FPR, a third-party protocol's own). Each
cell records the board's value, the spread of the per-trial values (sample std, ddof 1), the
number of trials, whether it trains at run time (`Plugin.trains` of its defense or attack), and
its tolerance, derived by RULE:

- a cell that trains at run time, with n >= 2 trials: max(STD_FACTOR x std, the suite's tolerance);
- a cell that trains at run time, with one trial: the suite's tolerance for the metric;
- a cell that trains nothing at run time (pinned models, seeded inference): the suite's
  `inference_tolerance`, 0 (exact) unless the suite says otherwise.

The suite's tolerance is [check] tolerance.<metric>, else FLOOR_DEFAULTS (fraction metrics), else
[check] default_tolerance (1.0 points). The file also records the suite, its digest and the model
set; `check` refuses a run whose suite digest or model set differs (unless --allow-subset).
The format is docs/check.md and docs/reference.schema.json.
"""

from __future__ import annotations

import json
import math
import statistics
from dataclasses import asdict, dataclass, field
from pathlib import Path

from bench.core.cache import atomic_write_bytes
from bench.core.declared import check_boards, check_metrics, declared, protocols
from bench.core.metrics import LEGACY_METRICS
from bench.core.types import infer_protocol
from bench.core.errors import UserError
from bench.reports.fingerprint import fingerprint_key
from bench.reports.identity import of_rows
from bench.reports.leaderboard import trains_at_run_time
from bench.reports.tables import provenance_of
from bench.core.results import json_view, read_rows

KIND = "authbench-reference"
LEGACY_KIND = "authbench-leaderboard"  # a leaderboard.json (write_leaderboard): values only, no trials
LEGACY_FINGERPRINT_KIND = "authbench-fingerprint-leaderboard"  # fingerprint_leaderboard.json, likewise
VERSION = 1
STD_FACTOR = 3.0
FLOOR_DEFAULTS = {"auc": 0.02, "tpr@1%fpr": 0.05}  # fractions in [0, 1], not accuracy points
CHECK_KEYS = {"tolerance", "default_tolerance", "inference_tolerance", "trials"}
RULE = (f"cells that train at run time (their defense or attack trains): tolerance = max({STD_FACTOR:g} x std over "
        "trials, suite tolerance) with >= 2 trials, the suite tolerance with one; cells that train nothing at "
        "run time: the suite's inference_tolerance (0 = exact). Suite tolerance: [check] tolerance.<metric>, "
        "else the built-in floor for fraction metrics (auc 0.02, tpr@1%fpr 0.05), else [check] default_tolerance. "
        "std: sample standard deviation (ddof 1) of the per-trial board values.")


@dataclass(frozen=True, kw_only=True)
class Tolerances:
    """The suite's [check] section: the floors the rule uses."""

    default: float = 1.0
    per_metric: dict = field(default_factory=dict)
    inference: float = 0.0

    @classmethod
    def from_check(cls, check: dict | None, *, per_metric: dict | None = None,
                   default: float | None = None) -> "Tolerances":
        """From a suite's [check] table, then the command line's per-metric and default tolerances."""
        check = dict(check or {})
        unknown = sorted(set(check) - CHECK_KEYS)
        if unknown:
            raise UserError(f"[check] has unknown key(s) {', '.join(unknown)}; valid keys: {', '.join(sorted(CHECK_KEYS))}")
        metrics = {LEGACY_METRICS.get(k, k): v for k, v in {**dict(check.get("tolerance") or {}), **(per_metric or {})}.items()}
        known = check_metrics()
        bad = sorted(set(metrics) - set(known))
        if bad:
            raise UserError(f"unknown metric(s) {', '.join(bad)} in tolerances; valid: {', '.join(known)}")
        try:
            return cls(default=float(default if default is not None else check.get("default_tolerance", 1.0)),
                       per_metric={k: float(v) for k, v in metrics.items()},
                       inference=float(check.get("inference_tolerance", 0.0)))
        except (TypeError, ValueError) as e:
            raise UserError(f"[check] tolerances must be numbers of points ({e})") from None

    def suite_tolerance(self, metric: str) -> float:
        return self.per_metric.get(metric, FLOOR_DEFAULTS.get(metric, self.default))

    def derive(self, metric: str, *, trained: bool, std: float | None, n_trials: int) -> float:
        """The rule (RULE) for one cell."""
        if not trained:
            return self.inference
        floor = self.suite_tolerance(metric)
        return max(STD_FACTOR * std, floor) if n_trials >= 2 and std is not None else floor


@dataclass(frozen=True, kw_only=True)
class RefCell:
    """One (board, row key, metric) of a reference."""

    board: str
    key: str
    metric: str
    direction: str
    value: float
    std: float | None
    n_trials: int
    trained: bool
    tolerance: float

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> "RefCell":
        cell = {k: data[k] for k in ("board", "key", "metric", "direction", "value", "std", "n_trials", "trained",
                                     "tolerance")}
        if cell["board"] == "leaderboard":  # a reference frozen before the leaderboard's gap was renamed
            cell["metric"] = LEGACY_METRICS.get(cell["metric"], cell["metric"])
        return cls(**cell)


@dataclass(frozen=True, kw_only=True)
class Reference:
    """What `check` compares: cells plus the suite, its digest and the model set they were measured on
    (None where the source does not say: a legacy leaderboard.json has no model set)."""

    suite: str
    suite_digest: str | None
    models: tuple[str, ...] | None
    cells: tuple[RefCell, ...]
    provenance: dict = field(default_factory=dict)
    source: str = "reference"  # "reference" (frozen), "rows" (results), "leaderboard" (legacy leaderboard.json)
    identity: dict = field(default_factory=dict)  # bench.reports.identity.RunIdentity (data, weights, n) as JSON

    def to_json(self) -> dict:
        return {"kind": KIND, "version": VERSION, "suite": self.suite, "suite_digest": self.suite_digest,
                "models": list(self.models or ()), "rule": RULE, "std_factor": STD_FACTOR,
                "provenance": self.provenance, "identity": self.identity, "cells": [c.to_json() for c in self.cells]}


def _finite(value) -> bool:
    return value is not None and not (isinstance(value, float) and math.isnan(value))


def board_values(rows: list[dict]) -> dict[tuple[str, str, str], tuple[float, bool]]:
    """(board, key, metric) -> (value, trains at run time) of every measured board cell of `rows`: the rows of the
    protocols sharing a check board (`Protocol.check_board`) go to the first such protocol's `check_cells`."""
    groups: dict[str, tuple[type, list[dict]]] = {}
    for r in rows:
        cls = declared(infer_protocol(r))
        if cls is not None and cls.check_board:
            groups.setdefault(cls.check_board, (cls, []))[1].append(r)
    out = {}
    for board, (cls, part) in groups.items():
        for key, metric, value, trained in cls.check_cells(part):
            out[(board, key, metric)] = (value, trained)
    return out


def model_set(rows: list[dict]) -> tuple[str, ...]:
    """The models a run measured: every authorized and evaluated label."""
    return tuple(sorted({str(r.get(k)) for r in rows for k in ("authorized", "evaluated") if r.get(k)}))


def restrict_to_models(rows: list, models) -> list:
    """The rows whose authorized and evaluated labels are all in `models` (the clean baseline's empty authorized
    label passes): a board cell of these rows is pooled over those models only, as the reference's was."""
    keep = set(models)
    return [r for r in rows if all(not r.get(k) or str(r.get(k)) in keep for k in ("authorized", "evaluated"))]


def reference_from_rows(rows: list, tolerances: Tolerances) -> Reference:
    """The reference of result rows (typed `Row`s or their JSON): board values over all trials, the spread of the
    per-trial values."""
    rows = json_view(rows)
    if not rows:
        raise UserError("no result rows to build a reference from; run a suite first")
    values = board_values(rows)
    trials = sorted({int(r.get("trial") or 0) for r in rows})
    per_trial: dict[tuple, list[float]] = {k: [] for k in values}
    if len(trials) > 1:
        for t in trials:  # the clean baseline (defense "none", one trial) stays in every trial's board
            subset = [r for r in rows if int(r.get("trial") or 0) == t or r.get("defense") == "none"]
            for k, (v, _) in board_values(subset).items():
                if k in per_trial:
                    per_trial[k].append(v)
    cells = []
    for (board, key, metric), (value, trained) in values.items():
        seen = per_trial[(board, key, metric)]
        n = max(len(seen), 1)
        std = statistics.stdev(seen) if len(seen) >= 2 else None
        cells.append(RefCell(board=board, key=key, metric=metric, direction=check_boards()[board][metric], value=value,
                             std=std, n_trials=n, trained=trained,
                             tolerance=tolerances.derive(metric, trained=trained, std=std, n_trials=n)))
    prov = provenance_of(rows)
    digests = sorted({str(r.get("suite_digest")) for r in rows if r.get("suite_digest")})
    return Reference(suite=str(prov.get("suite", "")), suite_digest=", ".join(digests) or None,
                     models=model_set(rows), cells=tuple(cells), provenance=prov, source="rows",
                     identity=of_rows(rows).to_json())


def _owner(board: str) -> str:
    """The protocol that declares check board `board` (a legacy fingerprint leaderboard's rows are its)."""
    return next((cls.name for cls in protocols() if cls.check_board == board), board)


def _legacy(data: dict, tolerances: Tolerances) -> Reference:
    prov = data.get("provenance") or {}
    board = "fingerprint" if data["kind"] == LEGACY_FINGERPRINT_KIND else "leaderboard"
    cells = []
    for rec in data["rows"]:
        trained = trains_at_run_time(str(rec.get("defense", "")), str(rec.get("attack", "")))
        key = fingerprint_key(rec, _owner(board)) if board == "fingerprint" else rec["key"]
        if board == "leaderboard":  # a leaderboard.json written before the rename
            rec = {**{LEGACY_METRICS[k]: v for k, v in rec.items() if k in LEGACY_METRICS}, **rec}
        for metric, direction in check_boards().get(board, {}).items():
            if _finite(rec.get(metric)):
                cells.append(RefCell(board=board, key=key, metric=metric, direction=direction,
                                     value=float(rec[metric]), std=None, n_trials=1, trained=trained,
                                     tolerance=tolerances.derive(metric, trained=trained, std=None, n_trials=1)))
    return Reference(suite=str(prov.get("suite", "")), suite_digest=prov.get("suite_digest") or None, models=None,
                     cells=tuple(cells), provenance=prov, source="leaderboard")


def _frozen(data: dict, where: str) -> Reference:
    try:
        cells = tuple(RefCell.from_json(c) for c in data["cells"])
        models = data["models"]
        suite = data["suite"]
    except (KeyError, TypeError) as e:
        raise UserError(f"reference {where!r} is malformed (missing {e}); rebuild it with "
                        "`authbench leaderboard freeze`") from None
    boards = check_boards()
    bad = sorted({c.board for c in cells} - set(boards))
    if bad:
        raise UserError(f"reference {where!r} names unknown board(s) {', '.join(bad)}; valid: {', '.join(boards)}")
    identity = data.get("identity") if isinstance(data.get("identity"), dict) else {}
    return Reference(suite=suite, suite_digest=data.get("suite_digest"), models=tuple(models), cells=cells,
                     provenance=data.get("provenance") or {}, source="reference", identity=identity)


def read_json(path: Path) -> dict | None:
    """A .json file's object (None for a results file or run folder)."""
    path = Path(path)
    if path.suffix != ".json":
        return None
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise UserError(f"reference {str(path)!r} does not exist; pass a reference .json, a leaderboard.json or a "
                        "results.jsonl") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UserError(f"reference {str(path)!r} is not readable JSON ({e}); pass a reference .json") from None
    if not isinstance(data, dict) or data.get("kind") not in (KIND, LEGACY_KIND, LEGACY_FINGERPRINT_KIND):
        raise UserError(f"reference {str(path)!r} is not an authbench reference (expected \"kind\": \"{KIND}\", "
                        f"or \"{LEGACY_KIND}\" / \"{LEGACY_FINGERPRINT_KIND}\" for a leaderboard.json)")
    if data["kind"] != KIND and not isinstance(data.get("rows"), list):
        raise UserError(f"reference {str(path)!r} is a leaderboard without rows")
    if data["kind"] == LEGACY_KIND:
        for i, row in enumerate(data["rows"]):
            if not isinstance(row, dict) or not isinstance(row.get("key"), str):
                raise UserError(f"reference {str(path)!r}: rows[{i}] is not a leaderboard row (a table with a \"key\"); "
                                "pass a leaderboard.json written by authbench")
    return data


def read_source(path: Path) -> dict | list[dict]:
    """What a check input holds, read once: a reference / leaderboard JSON object, else its result rows."""
    data = read_json(path)
    return data if data is not None else read_rows(Path(path))  # validated through Row.from_json


def from_source(source: dict | list, where: str, tolerances: Tolerances) -> Reference:
    """The Reference of what `read_source` read from `where`; the tolerances apply where the source records
    none (rows, legacy leaderboards)."""
    if isinstance(source, list):
        return reference_from_rows(source, tolerances)
    return _frozen(source, where) if source["kind"] == KIND else _legacy(source, tolerances)


def load(path: Path, tolerances: Tolerances) -> Reference:
    """A frozen reference .json, a legacy leaderboard.json, or result rows (.jsonl or a run folder)."""
    return from_source(read_source(path), str(path), tolerances)


def freeze(rows: list[dict], out: Path, tolerances: Tolerances, boards: list[dict] | None = None) -> Reference:
    """Write the reference of `rows` to `out` (JSON, docs/reference.schema.json). `boards` (the
    like-for-like boards' JSON, bench.reports.boards) ride along, so one file is both what `check`
    compares with and what `authbench rank` places new rows on."""
    ref = reference_from_rows(rows, tolerances)
    data = ref.to_json()
    if boards:
        data["boards"] = boards
    atomic_write_bytes(Path(out), (json.dumps(data, indent=1) + "\n").encode())
    return ref
