"""Boards: like-for-like leaderboards, one per (suite, protocol, model set, data size, standard attack set).

A board row is one defense at one operating point (every parameter, defaults included, plus its
PSNR point and release). Rows computed on other model sets, data sizes or suites are never ranked
together: they land on another board.

Gap boards (input authorization, model authorization, the DP/FHE/ALGOSPEC baselines):
- `auth_gap` of authorized model a under attack A = top-1 of a on the release as delivered (no
  attack; the authorized user does not attack their own data) - the best top-1 of any other
  evaluated model on the release after A (same-architecture and other-architecture models alike).
  A = "none" is the clean auth_gap.
- headline `worst_auth_gap` = mean over authorized models a of min over A in {none} + the standard
  attacks of auth_gap(a, A): for each authorized model the attack that helps the attacker most.
Ownership boards rank by the worst-case AUC over {none} + the standard attacks, then the
worst-case TPR@1%FPR, each the mean over source models of the per-source minimum.

A row missing a standard attack for any of its authorized models is incomplete, and a row whose
headline is NaN is unmeasured: both are shown, never ranked. Trials are averaged per cell first.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

import pandas as pd

from bench.attacks import attack_label
from bench.core.cache import digest
from bench.core.declared import declared, protocols
from bench.core.types import infer_protocol as row_protocol
from bench.defenses import get_defense
from bench.core.errors import UserError
from bench.core.results import json_view
from bench.paths import under
from bench.reports.tables import measured_line, provenance_of, to_markdown, write_csv
from bench.reports.papers import paper_of

KIND = "authbench-boards"
VERSION = 1
OTHERS = ("same-arch", "unauthorized")  # the roles whose best top-1 is the attacker's
_POINT = ("psnr", "psnr_mode")
SCORED = ("authorized", *OTHERS)  # the roles a row's model set and n come from (not FHE's plaintext reference)
DERIVED = re.compile(r"\[[^\[\]]*\]$")  # "mlp-s0[released]", "mlp-s0[dp-eps3]": an artifact of model mlp-s0


@dataclass(frozen=True, kw_only=True)
class BoardSpec:
    """How a board scores and ranks its rows; a protocol declares the boards its rows rank on
    (`Protocol.boards`: board name -> BoardSpec, built with `gap_board`, `ownership_board` or its own)."""

    title: str
    headline: str  # the ranking metric (worst case over {none} + the standard attacks)
    tiebreak: str
    score: Callable  # (cells, standard attacks) -> (values, per_model, worst attack, missing)
    scored: Callable  # cells -> the cells a row's model set and n come from
    order: int = 9  # where the board comes among a suite's boards
    decimals: int = 1
    records_evaluated: bool = False  # the board records the evaluated models' weights (pinned evaluated models)
    ranking: str = ""  # how rows are ranked, in words (format_board)
    higher_is_better: bool = True  # of the headline and the tiebreak
    definition: str = ""  # what the board's columns mean (boards.md prints it once per kind of board)
    # a board of its own kind: row -> its readable columns after the operating point (None: the gap or the
    # ownership columns), and the same for a sweep point (clean only)
    columns: Callable | None = None
    sweep_columns: Callable | None = None


def gap_board(title: str, *, order: int = 9, records_evaluated: bool = False) -> BoardSpec:
    """A board ranked by the worst-case authorization gap (bench.reports.boards module docstring)."""
    return BoardSpec(title=title, headline="worst_auth_gap", tiebreak="auth_gap", score=_gap_row, order=order,
                     scored=lambda cells: [c for c in cells if c["role"] in SCORED] or cells,
                     records_evaluated=records_evaluated, ranking=" then the clean auth_gap", definition=GAP_DEFINITION)


def ownership_board(title: str, *, order: int = 9) -> BoardSpec:
    """A board ranked by the worst-case AUC of a verification method (then the worst-case TPR@1%FPR); n = the
    suspects a summary scores, not each method's own query count."""
    return BoardSpec(title=title, headline="worst_auc", tiebreak="worst_tpr@1%fpr", score=_own_row, order=order,
                     scored=lambda cells: [c for c in cells if c["role"] == "summary"]
                     or [c for c in cells if c["role"] in SCORED] or cells,
                     decimals=3, ranking=" then worst_tpr@1%fpr", definition=OWNERSHIP_DEFINITION)


def spec_of(board: str) -> BoardSpec:
    """The spec of a board, as a declared protocol states it; an unknown board (its protocol not installed here)
    is read as a gap board."""
    for cls in protocols():
        if board in cls.boards:
            return cls.boards[board]
    return gap_board(board)


def base_label(label: str) -> str:
    """The model an evaluated label stands for: a model defense's released or retrained artifact is
    labelled `<model>[<what>]` and counts as <model> in the board's model set."""
    return DERIVED.sub("", label)


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:g}"
    if isinstance(v, (str, int, bool)) or v is None:
        return str(v)
    return json.dumps(v, sort_keys=True, separators=(",", ":"))


def _defense_class(name: str):
    try:
        return get_defense(name)
    except UserError:  # a plugin not installed where the board is read
        return None


def full_params(defense: str, params: dict, point: dict) -> str:
    """`k=v,...` of every parameter of the defense, defaults included (from its registered class),
    swept values from `point` overriding them; psnr and psnr_mode have their own columns."""
    cls = _defense_class(defense)
    merged = {**(dict(cls.defaults) if cls is not None else {}), **(params or {}), **(point or {})}
    return ",".join(f"{k}={_fmt(merged[k])}" for k in sorted(merged) if k not in _POINT) or "-"


def display_name(defense: str) -> tuple[str, str]:
    """(name, description) of a defense as its class states them: a `module:Class` plugin shows its
    class's `name` and `description`, never the module path."""
    cls = _defense_class(defense)
    if cls is None:
        return defense, ""
    return str(getattr(cls, "name", defense)), str(getattr(cls, "description", ""))


def row_name(defense: str, params: dict | None = None, point: dict | None = None) -> str:
    """The name a row shows: the defense's display name, or what its class's `row_label(params)` gives
    (a method whose public-code options or ablations must be told apart from its paper default)."""
    cls = _defense_class(defense)
    labeller = getattr(cls, "row_label", None)
    if labeller is None:
        return display_name(defense)[0]
    return str(labeller({**(params or {}), **(point or {})}))


def short_paper(defense: str) -> str:
    """The defense's paper in a few words for a board's `paper` column ("Wang et al., arXiv 2510.10982"): from
    its class's `paper` (or the built-in table, bench.reports.entries.paper_of); "control (no paper)" for the
    noise control, "" where none is known."""

    try:
        paper = paper_of(defense)
    except (AttributeError, TypeError):  # a class whose `paper` is not the documented table
        return ""
    if not paper:
        return "control (no paper)" if display_name(defense)[0] == "noise" else ""
    where = f"arXiv {paper['arxiv']}" if paper.get("arxiv") else paper.get("venue") or ""
    text = ", ".join(p for p in (paper.get("authors"), where) if p)
    authors = str(paper.get("authors") or "")
    if authors.count(",") >= 2:  # a full author list: the first author et al.
        text = text.replace(authors, authors.split(",")[0].split()[-1] + " et al.")
    return text + (" (NE Table 3 baseline)" if paper.get("note", "").startswith("as instantiated in NE Table 3") else "")


def board_kind(protocol: str, defense: str) -> str:
    """The board a row ranks on: its defense's `board` when it names one (the baselines), else its protocol's
    declared `board` (by default the protocol's name)."""
    cls = _defense_class(defense)
    declared_cls = declared(protocol)
    return ((getattr(cls, "board", None) if cls is not None else None)
            or (declared_cls.board if declared_cls is not None else None) or protocol)


def parse_standard(section: dict | None) -> dict[str, tuple[str, ...]]:
    """A suite's [standard_attacks] (board = [attack entries]) as board -> attack labels ("none" left out)."""
    out = {}
    for board, entries in (section or {}).items():
        if not isinstance(entries, list):
            raise UserError(f"[standard_attacks] {board} must be a list of attacks, e.g. {board} = [\"crop\"]")
        out[board] = tuple(dict.fromkeys(label for label in map(attack_label, entries) if label != "none"))
    return out


@dataclass(frozen=True, kw_only=True)
class BoardKey:
    """What makes two rows comparable: suite, board, protocol, the exact model set, data size, standard attacks."""

    suite: str
    board: str
    protocol: str
    authorized: tuple[str, ...]
    evaluated: tuple[str, ...]
    n: tuple[int, ...]
    standard_attacks: tuple[str, ...]

    @property
    def slug(self) -> str:
        return f"{self.suite}-{self.board}-{digest(self.to_json())[:8]}"

    def to_json(self) -> dict:
        return {"suite": self.suite, "board": self.board, "protocol": self.protocol, "authorized": list(self.authorized),
                "evaluated": list(self.evaluated), "n": list(self.n), "standard_attacks": list(self.standard_attacks)}

    @classmethod
    def from_json(cls, data: dict) -> "BoardKey":
        return cls(suite=str(data["suite"]), board=str(data["board"]), protocol=str(data["protocol"]),
                   authorized=tuple(data["authorized"]), evaluated=tuple(data["evaluated"]),
                   n=tuple(int(v) for v in data["n"]), standard_attacks=tuple(data["standard_attacks"]))

    def differs(self, other: "BoardKey") -> str | None:
        """One phrase naming the first difference from `other` (the reference), or None."""
        for name in ("suite", "board", "protocol", "authorized", "evaluated", "n", "standard_attacks"):
            mine, theirs = getattr(self, name), getattr(other, name)
            if mine != theirs:
                if isinstance(mine, tuple):
                    extra, lack = sorted(set(map(str, mine)) - set(map(str, theirs))), sorted(set(map(str, theirs)) - set(map(str, mine)))
                    parts = ([f"only in the run: {', '.join(extra)}"] if extra else []) + \
                            ([f"only in the reference: {', '.join(lack)}"] if lack else [])
                    return f"{name} differ ({'; '.join(parts) or 'order'})"
                return f"{name} differs (run {mine!r}, reference {theirs!r})"
        return None


@dataclass(frozen=True, kw_only=True)
class BoardRow:
    """One defense at one operating point on one board, with its per-model detail."""

    defense: str
    name: str
    description: str
    params: str
    psnr: float | None
    psnr_mode: str
    release: str
    authorized: tuple[str, ...]
    n: tuple[int, ...]
    values: dict  # metric -> number or None: clean metrics, one per standard attack, the headline(s)
    per_model: dict  # authorized -> {"gaps"/"auc": {attack: value}, "worst": value, "worst_attack": label}
    worst_attack: str
    complete: bool
    missing: tuple[str, ...] = ()
    rank: int | None = None
    new: bool = False
    provenance: dict = field(default_factory=dict)
    paper: str = ""  # the defense's paper (its class's `paper`), shown beside its name

    @property
    def entry(self) -> str:
        """Stable identity of the row on its board: defense|params|psnr|psnr_mode|release."""
        psnr = "" if self.psnr is None else f"{self.psnr:g}"
        return "|".join([self.defense, self.params, f"psnr={psnr}", self.psnr_mode, self.release])

    def to_json(self) -> dict:
        return {"entry": self.entry, "defense": self.defense, "name": self.name, "description": self.description,
                "params": self.params, "psnr": self.psnr, "psnr_mode": self.psnr_mode, "release": self.release,
                "authorized": list(self.authorized), "n": list(self.n), "values": self.values,
                "per_model": self.per_model, "worst_attack": self.worst_attack, "complete": self.complete,
                "missing": list(self.missing), "rank": self.rank, "new": self.new, "provenance": self.provenance,
                "paper": self.paper}

    @classmethod
    def from_json(cls, data: dict) -> "BoardRow":
        return cls(defense=data["defense"], name=data.get("name", data["defense"]), description=data.get("description", ""),
                   params=data["params"], psnr=data.get("psnr"), psnr_mode=data.get("psnr_mode", ""),
                   release=data["release"], authorized=tuple(data["authorized"]), n=tuple(data.get("n", ())),
                   values=dict(data.get("values", {})), per_model=dict(data.get("per_model", {})),
                   worst_attack=data.get("worst_attack", ""), complete=bool(data.get("complete")),
                   missing=tuple(data.get("missing", ())), rank=data.get("rank"), new=bool(data.get("new")),
                   provenance=dict(data.get("provenance", {})),
                   paper=str(data.get("paper") or short_paper(data["defense"])))


@dataclass(frozen=True, kw_only=True)
class Board:
    key: BoardKey
    rows: tuple[BoardRow, ...]
    models: dict = field(default_factory=dict)  # label -> weights digest (what the labels were)
    provenance: dict = field(default_factory=dict)

    @property
    def spec(self) -> BoardSpec:
        return spec_of(self.key.board)

    @property
    def headline(self) -> str:
        return self.spec.headline

    @property
    def title(self) -> str:
        spec = self.spec
        return spec.title if spec.title != self.key.board else f"{self.key.board} (protocol {self.key.protocol})"

    def to_json(self) -> dict:
        return {"key": self.key.to_json(), "slug": self.key.slug, "title": self.title, "headline": self.headline,
                "models": self.models, "provenance": self.provenance, "rows": [r.to_json() for r in self.rows]}

    @classmethod
    def from_json(cls, data: dict) -> "Board":
        return cls(key=BoardKey.from_json(data["key"]), rows=tuple(BoardRow.from_json(r) for r in data.get("rows", [])),
                   models=dict(data.get("models", {})), provenance=dict(data.get("provenance", {})))


# -- computing boards from result rows ------------------------------------------------------------

def _top1(row: dict) -> float:
    v = (row.get("metrics") or {}).get("top1")
    return math.nan if v is None else float(v)


def _nanmean(values) -> float:
    values = [v for v in values]
    return math.nan if not values or any(math.isnan(v) for v in values) else sum(values) / len(values)


def _plain(v):
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else float(v)


def _gap_row(cells: list[dict], standard: tuple[str, ...]) -> tuple[dict, dict, str, tuple[str, ...]]:
    """(values, per_model, worst attack, missing) of one operating point's cells."""
    frame = pd.DataFrame({"authorized": [c["authorized"] for c in cells], "evaluated": [c["evaluated"] for c in cells],
                          "role": [c["role"] for c in cells], "attack": [c["attack"] for c in cells],
                          "top1": [_top1(c) for c in cells]})
    frame = frame.groupby(["authorized", "attack", "evaluated", "role"], sort=False)["top1"].mean().reset_index()
    per_model, missing = {}, []
    for auth, part in frame.groupby("authorized", sort=True):
        clean = part[part["attack"] == "none"]
        own = clean.loc[clean["role"] == "authorized", "top1"]
        top1 = float(own.mean()) if len(own) else math.nan
        gaps, worst_others = {}, {}
        for attack in ("none", *standard):
            others = part.loc[(part["attack"] == attack) & part["role"].isin(OTHERS), "top1"]
            if others.empty or (attack == "none" and own.empty):
                missing.append(f"{attack} for {auth}")
                continue
            worst_others[attack] = float(others.max())
            gaps[attack] = top1 - worst_others[attack]
        measured = {a: g for a, g in gaps.items() if not math.isnan(g)}
        worst_attack = min(measured, key=lambda a: (measured[a], a != "none")) if measured else ""
        per_model[auth] = {"authorized_top1": _plain(top1), "unauthorized_worst": {a: _plain(v) for a, v in worst_others.items()},
                           "auth_gap": {a: _plain(g) for a, g in gaps.items()},
                           "worst": _plain(measured[worst_attack]) if worst_attack and len(gaps) == 1 + len(standard) else None,
                           "worst_attack": worst_attack}
    models = list(per_model)

    def mean_of(fn):
        return _plain(_nanmean([fn(per_model[a]) for a in models]))

    def num(v):
        return math.nan if v is None else v

    values = {"authorized_top1": mean_of(lambda m: num(m["authorized_top1"])),
              "unauthorized_worst": mean_of(lambda m: num(m["unauthorized_worst"].get("none"))),
              "auth_gap": mean_of(lambda m: num(m["auth_gap"].get("none")))}
    for attack in standard:
        values[f"auth_gap[{attack}]"] = mean_of(lambda m: num(m["auth_gap"].get(attack)))
    values["worst_auth_gap"] = None if missing else mean_of(lambda m: num(m["worst"]))
    return values, per_model, _most_common([m["worst_attack"] for m in per_model.values()]), tuple(missing)


def _own_row(cells: list[dict], standard: tuple[str, ...]) -> tuple[dict, dict, str, tuple[str, ...]]:
    """Ownership: AUC and TPR@1%FPR per source and attack (trials averaged), worst case per source."""
    summary = [c for c in cells if c["role"] == "summary"]
    per_model, missing = {}, []
    sources = sorted({c["authorized"] for c in summary})
    for src in sources:
        auc, tpr = {}, {}
        for attack in ("none", *standard):
            part = [c["metrics"] for c in summary if c["authorized"] == src and c["attack"] == attack]
            if not part:
                missing.append(f"{attack} for {src}")
                continue
            auc[attack] = _nanmean([float(m.get("auc", math.nan)) for m in part])
            tpr[attack] = _nanmean([float(m.get("tpr@1%fpr", math.nan)) for m in part])
        done = len(auc) == 1 + len(standard)
        worst_attack = min(auc, key=lambda a: (auc[a], a != "none")) if auc else ""
        per_model[src] = {"auc": {a: _plain(v) for a, v in auc.items()}, "tpr@1%fpr": {a: _plain(v) for a, v in tpr.items()},
                          "worst": _plain(min(auc.values())) if done else None,
                          "worst_tpr@1%fpr": _plain(min(tpr.values())) if done else None, "worst_attack": worst_attack}

    def mean_of(fn):
        return _plain(_nanmean([fn(per_model[s]) for s in sources]))

    def num(v):
        return math.nan if v is None else v

    values = {"auc": mean_of(lambda m: num(m["auc"].get("none"))),
              "tpr@1%fpr": mean_of(lambda m: num(m["tpr@1%fpr"].get("none")))}
    for attack in standard:
        values[f"auc[{attack}]"] = mean_of(lambda m: num(m["auc"].get(attack)))
    values["worst_auc"] = None if missing else mean_of(lambda m: num(m["worst"]))
    values["worst_tpr@1%fpr"] = None if missing else mean_of(lambda m: num(m["worst_tpr@1%fpr"]))
    return values, per_model, _most_common([m["worst_attack"] for m in per_model.values()]), tuple(missing)


def _most_common(items: list[str]) -> str:
    items = [i for i in items if i]
    return max(dict.fromkeys(items), key=items.count) if items else ""


def _row_provenance(cells: list[dict]) -> dict:
    prov = provenance_of(cells)
    return {"suite": prov["suite"], "suite_digest": prov["suite_digest"], "git": prov["git"],
            "versions": prov["versions"], "cells": len(cells),
            "wall_s": round(sum(job_walls(cells).values()), 3)}


def job_walls(cells: list[dict]) -> dict:
    """Each job's wall time once: every row of a job records the whole job's wall time, so summing the rows
    counts a job once per cell. A job is its row's `job` key, else (authorized, attack, trial) within one
    operating point (the evaluated models of a job are its cells)."""
    walls: dict = {}
    for c in cells:
        job = c.get("job") or (c.get("authorized"), c.get("attack"), c.get("trial"), c.get("defense"),
                               json.dumps(c.get("point") or {}, sort_keys=True), c.get("release"))
        wall = float((c.get("provenance") or {}).get("wall_s") or 0)
        walls[job] = max(walls.get(job, 0.0), wall)
    return walls


def rank_rows(rows, headline: str, tiebreak: str, sign: float = 1.0) -> tuple[BoardRow, ...]:
    """Complete rows with a finite headline ranked by it (then `tiebreak`), best first (`sign` -1: lower is
    better); the rest after, unranked."""
    def score(r, metric):
        v = r.values.get(metric)
        return -math.inf if v is None or math.isnan(v) else sign * v

    ranked = sorted((r for r in rows if r.complete and r.values.get(headline) is not None),
                    key=lambda r: (-score(r, headline), -score(r, tiebreak), r.entry))
    rest = sorted((r for r in rows if r not in ranked), key=lambda r: (-score(r, tiebreak), r.entry))
    return tuple([replace(r, rank=i + 1) for i, r in enumerate(ranked)] + [replace(r, rank=None) for r in rest])


def _rank_board(board: Board) -> Board:
    spec = board.spec
    return replace(board, rows=rank_rows(board.rows, board.headline, spec.tiebreak, 1.0 if spec.higher_is_better else -1.0))


def build_boards(rows: list[dict], standard: dict[str, tuple[str, ...]]) -> list[Board]:
    """Every board of `rows` (typed rows or their JSON), ranked. `standard`: board -> attack labels."""
    rows = json_view(rows)
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        if r.get("defense") == "none":
            continue
        protocol = row_protocol(r)
        point = r.get("point") or {}
        psnr = point.get("psnr")
        key = (str(r.get("suite", "")), board_kind(protocol, r["defense"]), protocol, r["defense"],
               full_params(r["defense"], r.get("params") or {}, point), None if psnr is None else float(psnr),
               str(point.get("psnr_mode") or ""), str(r.get("release", "")))
        groups.setdefault(key, []).append(r)
    boards: dict[BoardKey, list[BoardRow]] = {}
    models: dict[BoardKey, dict] = {}
    for (suite, board, protocol, defense, params, psnr, mode, release), cells in groups.items():
        std = tuple(standard.get(board, ()))
        spec = spec_of(board)
        scored = spec.scored(cells)
        bkey = BoardKey(suite=suite, board=board, protocol=protocol,
                        authorized=tuple(sorted({c["authorized"] for c in cells})),
                        evaluated=tuple(sorted({base_label(c["evaluated"]) for c in scored})),
                        n=tuple(sorted({int(c.get("n") or 0) for c in scored})), standard_attacks=std)
        values, per_model, worst, missing = spec.score(cells, std)
        name, description = display_name(defense)
        name = row_name(defense, cells[0].get("params") or {}, cells[0].get("point") or {})
        paper = short_paper(defense)
        boards.setdefault(bkey, []).append(BoardRow(
            defense=defense, name=name, description=description, params=params, psnr=psnr, psnr_mode=mode,
            release=release, authorized=bkey.authorized, n=bkey.n, values=values, per_model=per_model,
            worst_attack=worst, complete=not missing, missing=missing, provenance=_row_provenance(cells), paper=paper))
        seen = models.setdefault(bkey, {})
        for c in cells:  # the pinned models' weights: each authorized model, and the evaluated models of input rows
            prov = c.get("provenance") or {}
            if prov.get("authorized_digest") and c.get("authorized"):
                seen.setdefault(c["authorized"], prov["authorized_digest"])
            if spec.records_evaluated and prov.get("model_digest") and c.get("role") in ("authorized", "same-arch", "unauthorized"):
                seen.setdefault(c["evaluated"], prov["model_digest"])
    out = [_rank_board(Board(key=k, rows=tuple(v), models=dict(sorted(models[k].items())), provenance=provenance_of(
        [c for g, cells in groups.items() if g[0] == k.suite for c in cells][:1]))) for k, v in boards.items()]
    return sorted(out, key=lambda b: (b.key.suite, b.spec.order, -len(b.key.authorized), b.key.slug))


# -- placing a run on a reference ----------------------------------------------------------------

def place(new: list[Board], reference: list[Board]) -> list[Board]:
    """The reference boards with each new board's rows merged in (marked new) and re-ranked.
    A new board with no reference board of the same suite, board and protocol, or whose model set,
    data size or model weights differ from it, is a one-line user error naming what differs."""
    if not new:
        raise UserError("the results hold no rows of a protocol with boards; run a suite with a defense first")
    merged = {b.key: b for b in reference}
    for board in new:
        same = [b for b in reference if (b.key.suite, b.key.board, b.key.protocol) == (board.key.suite, board.key.board, board.key.protocol)]
        if not same:
            have = ", ".join(sorted({f"{b.key.suite}/{b.key.board}" for b in reference})) or "none"
            raise UserError(f"the reference has no {board.key.board} board of suite {board.key.suite!r} "
                            f"(it holds: {have}); rank against a reference of the same suite")
        candidates = [b for b in same if b.key.authorized == board.key.authorized and b.key.evaluated == board.key.evaluated] or same
        target = min(candidates, key=lambda b: (b.key.n != board.key.n, len(set(b.key.authorized) ^ set(board.key.authorized))))
        key = replace(board.key, standard_attacks=target.key.standard_attacks)
        what = key.differs(target.key)
        if what:
            raise UserError(f"{board.key.board} board of {board.key.suite!r}: {what}; the run must use the reference's "
                            "models and data (same [models] and [data], no --model or --subset change)")
        for label, d in board.models.items():
            ref = target.models.get(label)
            if ref and d and ref != d:
                raise UserError(f"model {label!r} has other weights than the reference's (digest {d[:12]} vs {ref[:12]}); "
                                "rank with the reference's pinned models")
        if key.standard_attacks != board.key.standard_attacks:
            raise UserError(f"{board.key.board} board of {board.key.suite!r}: standard attacks differ "
                            f"(run {', '.join(board.key.standard_attacks) or 'none'}; reference "
                            f"{', '.join(target.key.standard_attacks) or 'none'}); give the run's suite the reference's "
                            "[standard_attacks]")
        current = merged.pop(target.key)
        fresh = [replace(r, new=True) for r in board.rows]
        keep = [r for r in current.rows if r.entry not in {f.entry for f in fresh}]
        merged[target.key] = _rank_board(replace(current, rows=tuple(keep + fresh)))
    return [merged[b.key] for b in reference if b.key in merged]


def restandard(rows: list[dict], reference: list[Board]) -> list[Board]:
    """The boards of `rows` scored with the reference's standard attack sets (board -> labels)."""
    standard = {}
    for b in reference:
        standard.setdefault(b.key.board, b.key.standard_attacks)
    return build_boards(rows, standard)


# -- reading and writing -------------------------------------------------------------------------

def boards_payload(boards: list[Board], provenance: dict) -> dict:
    return {"kind": KIND, "version": VERSION, "provenance": provenance, "boards": [b.to_json() for b in boards]}


def boards_from_json(data) -> list[Board] | None:
    """The boards of a boards JSON (kind authbench-boards) or of a leaderboard JSON that carries a
    `boards` list; None when it holds none (other keys, e.g. trials or tolerances, are ignored)."""
    if not isinstance(data, dict) or not isinstance(data.get("boards"), list):
        return None
    try:
        return [Board.from_json(b) for b in data["boards"]]
    except (KeyError, TypeError, ValueError) as e:
        raise UserError(f"the reference's boards are malformed ({type(e).__name__}: {e}); regenerate it with authbench report")


def wide_frame(board: Board) -> pd.DataFrame:
    """Every row of the board with every column: rank, the new-row mark, identity, authorized models, n, every
    value (one gap per standard attack), status (the wide table: CSV, JSON and the site's toggle)."""
    records = []
    for r in board.rows:
        status = "ranked" if r.rank is not None else "sweep point (clean only)" if is_sweep(r) else (
            "incomplete: missing " + "; ".join(r.missing[:3]) + (f" (+{len(r.missing) - 3} more)" if len(r.missing) > 3 else "")
            if r.missing else "not ranked: headline not measured")
        records.append({"rank": r.rank, "new": "NEW" if r.new else "", "defense": r.name,
                        "params": r.params, "psnr": r.psnr, "psnr_mode": r.psnr_mode, "release": r.release,
                        "authorized": ",".join(r.authorized), "n_authorized": len(r.authorized),
                        "n": "/".join(map(str, r.n)), **r.values, "worst_attack": r.worst_attack, "status": status})
    return _numeric(pd.DataFrame.from_records(records), board)


board_frame = wide_frame  # the name callers used before the readable table existed


def _numeric(frame: pd.DataFrame, board: Board) -> pd.DataFrame:
    if not frame.empty and "new" in frame and not any(r.new for r in board.rows):
        frame = frame.drop(columns="new")
    for column in ("rank", "psnr", *(k for r in board.rows for k in r.values), "± 95% CI"):
        if column in frame:
            frame[column] = pd.to_numeric(frame[column], errors="coerce")
    return frame


Z95 = 1.959963984540054


def headline_ci(row: BoardRow) -> float | None:
    """Half-width of a normal 95% interval of a gap row's worst_auth_gap from test-set sampling: per authorized
    model a, the gap is a difference of two top-1 rates on n images (treated as independent, so the interval
    is conservative); the headline is their mean over the k authorized models, so its variance is the sum of
    theirs over k^2. None where a rate or n is unknown (and for ownership rows)."""
    n = min(row.n) if row.n else 0
    if n < 1 or not row.per_model or row.values.get("worst_auth_gap") is None:
        return None
    var = 0.0
    for m in row.per_model.values():
        attack = m.get("worst_attack")
        own, other = m.get("authorized_top1"), (m.get("unauthorized_worst") or {}).get(attack)
        if own is None or other is None:
            return None
        p, q = own / 100.0, other / 100.0
        if not (0 <= p <= 1 and 0 <= q <= 1):  # not a rate (e.g. a GLUE correlation score): no binomial interval
            return None
        var += p * (1 - p) / n + q * (1 - q) / n
    return 100.0 * Z95 * math.sqrt(var) / len(row.per_model)


def readable_frame(board: Board, rows=None) -> pd.DataFrame:
    """One row per entry, RobustBench style: rank, defense and its paper, operating point, authorized top-1,
    worst unauthorized top-1, the clean gap, the headline with its 95% CI, the worst attack. Sweep points are
    left out (sweep_frame); incomplete rows stay, unranked."""
    rows = [r for r in board.rows if not is_sweep(r)] if rows is None else rows
    varying = varying_params(board.rows)
    records = []
    for r in rows:
        base = {"rank": r.rank, "new": "NEW" if r.new else "", "defense": r.name, "paper": r.paper or "-",
                "operating point": operating_point(r, varying)}
        if board.spec.columns is not None:
            records.append({**base, **board.spec.columns(r)})
        elif _ranks_auc(board):
            records.append({**base, "auc": r.values.get("auc"), "worst_auc": r.values.get("worst_auc"),
                            "worst_tpr@1%fpr": r.values.get("worst_tpr@1%fpr"), "worst attack": r.worst_attack or "-"})
        else:
            records.append({**base, "authorized top-1": r.values.get("authorized_top1"),
                            "worst unauthorized top-1": r.values.get("unauthorized_worst"),
                            "clean auth_gap": r.values.get("auth_gap"),
                            "worst_auth_gap": r.values.get("worst_auth_gap"), "± 95% CI": headline_ci(r),
                            "worst attack": r.worst_attack or "-"})
    return _numeric(pd.DataFrame.from_records(records), board)


def sweep_frame(board: Board) -> pd.DataFrame:
    """The board's sweep: points off its ranked operating point, measured clean only (no rank)."""
    varying = varying_params(board.rows)
    own = board.spec.sweep_columns
    records = [{"defense": r.name, "operating point": operating_point(r, varying), "params": r.params,
                **(own(r) if own is not None else {
                    "authorized top-1": r.values.get("authorized_top1"),
                    "worst unauthorized top-1": r.values.get("unauthorized_worst"), "clean auth_gap": r.values.get("auth_gap"),
                    **({"auc": r.values.get("auc")} if _ranks_auc(board) else {})})}
               for r in board.rows if is_sweep(r)]
    return _numeric(pd.DataFrame.from_records(records), board)


def _ranks_auc(board: Board) -> bool:
    """An ownership-style board: ranked by the worst AUC of a verification method (not an accuracy gap)."""
    return board.spec.headline == "worst_auc"


def _decimals(frame: pd.DataFrame, board: Board) -> dict[str, int]:
    out = {c: board.spec.decimals for c in frame.columns}
    out.update({"rank": 0, "n_authorized": 0})
    return out


def format_board(board: Board) -> str:
    k = board.key
    frame, sweep = readable_frame(board), sweep_frame(board)
    attacks = ", ".join(k.standard_attacks) or "none (clean only)"
    text = [f"## {board.title}: suite `{k.suite}`, {len(k.authorized)} authorized model(s), n = {'/'.join(map(str, k.n))}",
            "", f"Board `{k.slug}` (protocol `{k.protocol}`). Authorized: {', '.join(k.authorized)}. "
            f"Evaluated: {', '.join(k.evaluated)}. Standard attacks: {attacks}. Ranked by `{board.headline}`"
            f"{board.spec.ranking}; incomplete and "
            "unmeasured rows are listed unranked." + (" NEW marks the rows of the run being ranked." if any(r.new for r in board.rows) else "")
            + ("" if _ranks_auc(board) else " ± 95% CI: test-set sampling of the headline (normal, conservative)."),
            "", to_markdown(frame, _decimals(frame, board), index=False) if not frame.empty else "(no ranked or incomplete rows)"]
    if not sweep.empty:
        text += ["", f"Sweep ({len(sweep)} point(s) off the ranked operating point, clean only, not ranked):", "",
                 to_markdown(sweep, _decimals(sweep, board), index=False)]
    what = "one value per standard attack" if board.spec.columns is not None else "one gap per standard attack"
    text += ["", f"Every column ({what}, parameters in full): "
             f"`boards/{k.slug}.wide.csv` and `boards.json`.", "",
             "Defenses: " + "; ".join(dict.fromkeys(
                 f"`{r.name}`" + (f" (`{r.defense}`)" if r.defense != r.name else "") + (f": {r.description}" if r.description else "")
                 + (f" [{r.paper}]" if r.paper else "") for r in board.rows)) + "."]
    return "\n".join(text)


GAP_DEFINITION = ("auth_gap(a, A) = top-1 of authorized model a on the release as delivered - the best top-1 of any "
                  "other evaluated model on the release after attack A (A = none: the clean auth_gap); auth_gap[A] is its "
                  "mean over the authorized models; worst_auth_gap = mean over authorized models of min over A in {none} + "
                  "the standard attacks of auth_gap(a, A).")
OWNERSHIP_DEFINITION = "Ownership: worst_auc = mean over sources of the minimum AUC over {none} + the standard attacks."
DEFINITION = (f"{GAP_DEFINITION} {OWNERSHIP_DEFINITION} Accuracies in top-1 %, higher is better for every column but "
              "unauthorized_worst.")


def definition(boards: list) -> str:
    """What the columns of `boards` mean: DEFINITION where a gap or ownership board is among them (or none is
    given), then each other board's own definition."""
    extra = [b.spec.definition for b in boards if b.spec.definition not in ("", GAP_DEFINITION, OWNERSHIP_DEFINITION)]
    builtin = not boards or any(b.spec.definition in ("", GAP_DEFINITION, OWNERSHIP_DEFINITION) for b in boards)
    return " ".join([DEFINITION] * builtin + list(dict.fromkeys(extra)))


def plot_board(board: Board, path: Path) -> Path | None:
    """A dot plot of the board's headline per ranked row (with its 95% CI), best at the top; None when no row
    is ranked."""
    ranked = [r for r in board.rows if r.rank is not None]
    if not ranked:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    varying = varying_params(board.rows)
    labels = [f"{r.rank}. {r.name} {operating_point(r, varying)}" + (" NEW" if r.new else "") for r in ranked]
    values = [r.values.get(board.headline) for r in ranked]
    errors = [headline_ci(r) or 0.0 for r in ranked]
    fig, ax = plt.subplots(figsize=(7, 0.9 + 0.35 * len(ranked)))
    ys = list(range(len(ranked)))[::-1]
    ax.errorbar(values, ys, xerr=errors, fmt="o", color="#1f5fa8", ecolor="#8aa9cc", capsize=3)
    for y, r in zip(ys, ranked):
        if r.new:
            ax.plot([r.values.get(board.headline)], [y], "o", color="#c0392b")
    ax.set_yticks(ys)
    ax.set_yticklabels(labels, fontsize=8)
    ax.axvline(0, color="#999", lw=0.8)
    ax.set_xlabel(board.headline + (" (top-1 points; bars: 95% CI)" if not _ranks_auc(board) else ""))
    ax.set_title(f"{board.title}: {board.key.suite}", fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_boards(boards: list[Board], out_dir: Path, provenance: dict, name: str = "boards") -> list[Path]:
    """<name>.md (every board: the readable table and its sweep), <name>.json (kind authbench-boards, every
    value), and per board under <name>/: <slug>.csv (the readable table, with its provenance sidecar),
    <slug>.sweep.csv (points off the ranked operating point), <slug>.wide.csv (every column) and <slug>.png
    (the headline per ranked row). The static site shows them on its Boards page."""
    out_dir = Path(out_dir)
    folder = under(out_dir, name)
    csvs = {b.key.slug: under(folder, f"{b.key.slug}.csv", what="board file name") for b in boards}
    folder.mkdir(parents=True, exist_ok=True)
    md, js = out_dir / f"{name}.md", out_dir / f"{name}.json"
    md.write_text(f"{measured_line(provenance)}\n\n# Boards\n\n{definition(boards)}\n\n" +
                  "\n\n".join(format_board(b) for b in boards) + "\n")
    js.write_text(json.dumps(boards_payload(boards, provenance), indent=1) + "\n")
    paths = [md, js]
    for b in boards:
        extra = {"title": f"{b.title}: {b.key.suite}", "key": b.key.to_json(), "headline": b.headline, "models": b.models}
        readable, sweep = readable_frame(b), sweep_frame(b)
        if not readable.empty:
            paths += write_csv(readable, csvs[b.key.slug], provenance, note=definition([b]), extra=extra)
        if not sweep.empty:
            paths += write_csv(sweep, under(folder, f"{b.key.slug}.sweep.csv", what="board file name"), provenance, note=definition([b]),
                               extra={**extra, "title": f"{b.title}: {b.key.suite}, sweep (not ranked)"})
        paths += write_csv(wide_frame(b), under(folder, f"{b.key.slug}.wide.csv", what="board file name"), provenance, note=definition([b]),
                           extra={**extra, "title": f"{b.title}: {b.key.suite}, every column"})
        figure = plot_board(b, under(folder, f"{b.key.slug}.png", what="board file name"))
        if figure is not None:
            paths.append(figure)
    for stale in {*folder.glob("*.csv"), *folder.glob("*.provenance.json"), *folder.glob("*.png")} - set(paths):
        stale.unlink()  # a board an earlier render of this folder wrote that these rows no longer make
    return paths


# -- reading a board at a glance ------------------------------------------------------------------

def is_sweep(row: BoardRow) -> bool:
    """A row off the board's ranked operating point: measured clean only, no standard attack at all (a PSNR
    sweep point, a ratio of a sweep); shown in the board's sweep table, not as an incomplete ranked row."""
    if row.complete or not row.missing:
        return False
    return all(not ((m.get("auth_gap") or m.get("auc") or {}).keys() - {"none"}) for m in row.per_model.values())


def varying_params(rows) -> dict[str, list[str]]:
    """Per row entry, the `k=v` parameters that differ between the rows of the same defense (what tells them
    apart), plus those the suite set away from the defense's defaults."""
    rows = list(rows)
    split = {r.entry: split_params(r.params) for r in rows}
    out = {}
    for r in rows:
        same = [split[o.entry] for o in rows if o.defense == r.defense]
        vary = {k for k in split[r.entry] if len({d.get(k) for d in same}) > 1}
        own = set(k.split("=", 1)[0] for k in (set_params(r) or []))
        out[r.entry] = [f"{k}={v}" for k, v in split[r.entry].items() if k in vary | own]
    return out


def split_params(text: str) -> dict[str, str]:
    """`k=v,k=[1,2],...` (full_params) back into {k: v}: commas inside brackets or braces belong to the value."""
    out, depth, part = {}, 0, ""
    for ch in text + ",":
        if ch == "," and depth == 0:
            if "=" in part:
                k, v = part.split("=", 1)
                out[k] = v
            part = ""
            continue
        depth += (ch in "[{") - (ch in "]}")
        part += ch
    return out


def set_params(row: BoardRow) -> list[str] | None:
    """The row's `k=v` parameters that differ from its defense's defaults (what the suite set); None where the
    defense's class is not installed here."""
    cls = _defense_class(row.defense)
    if cls is None:
        return None
    defaults = {k: _fmt(v) for k, v in dict(cls.defaults).items()}
    return [f"{k}={v}" for k, v in split_params(row.params).items() if defaults.get(k) != v]


def operating_point(row: BoardRow, varying: dict[str, list[str]] | None = None) -> str:
    """The operating point in a few characters: '-10 dB float' for an input defense, else the parameters the
    suite set (those that differ from the defense's defaults; where its class is not installed, those that
    tell the row apart on its board, or all of them)."""
    parts = [f"{row.psnr:g} dB"] if row.psnr is not None else []
    if row.psnr_mode and row.psnr_mode not in ("true", ""):
        parts.append(row.psnr_mode)
    if row.release and row.release not in ("-", "model", "None"):
        parts.append(row.release)
    if row.psnr is None:
        own = (varying or {}).get(row.entry)
        if own is None:
            own = set_params(row)
        parts += own if own is not None else ([row.params] if row.params != "-" else [])
    return " ".join(parts) or "defaults"


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[:width - 1] + "~"


def glance(board: Board, top: int = 5, width: int = 100) -> str:
    """Each board's top ranked rows as a fixed-width table no wider than `width` (what `authbench run`
    prints at the end): rank, defense, operating point, headline, worst attack."""
    k = board.key
    ranked = [r for r in board.rows if r.rank is not None]
    sweep = [r for r in board.rows if is_sweep(r)]
    title = (f"{board.title} [{k.suite}]: {len(k.authorized)} authorized, n = {'/'.join(map(str, k.n))}, "
             f"{len(k.standard_attacks)} standard attack(s)")
    lines = [_cut(title, width)]
    if not ranked:
        lines.append(_cut(f"  no ranked row ({len(sweep)} sweep point(s), {len(board.rows) - len(sweep)} other "
                          "row(s): see the full boards)", width))
        return "\n".join(lines)
    varying = varying_params(board.rows)
    head = board.headline
    fixed = 4 + 2 + 16 + 2 + 28 + 2 + 14 + 2  # rank, defense, point, headline and the gaps between them
    attack_w = max(12, width - fixed)
    lines.append(f"{'rank':>4}  {'defense':<16}  {'operating point':<28}  {head:>14}  {'worst attack':<{attack_w}}".rstrip())
    for r in ranked[:top]:
        value = r.values.get(head)
        shown = "-" if value is None else f"{value:.3f}" if _ranks_auc(board) else f"{value:.1f}"
        lines.append(f"{r.rank:>4}  {_cut(r.name + (' NEW' if r.new else ''), 16):<16}  "
                     f"{_cut(operating_point(r, varying), 28):<28}  {shown:>14}  {_cut(r.worst_attack or '-', attack_w)}".rstrip())
    if len(ranked) > top:
        lines.append(f"      ... {len(ranked) - top} more ranked row(s)")
    if sweep:
        lines.append(f"      (+ {len(sweep)} sweep point(s) off the ranked operating point)")
    return "\n".join(lines)
