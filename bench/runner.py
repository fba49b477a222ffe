"""Expand a suite into cells, run only the missing ones, write one result row per cell.

A *cell* is (defense, parameter point, release format, attack, authorized model,
evaluated model). Cells that share an encoding form a *job*: the data is encoded
once for the authorized model and every evaluated model reads it. Jobs go through
an `Executor` (local, in-process, here; a distributed engine can implement the same
`map`). Forward passes and encodings are cached by content (bench.cache), so a clean
pass is shared by every defense and every later run.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np
import torch
from tqdm.auto import tqdm

from bench import provenance
from bench.attacks import attack_label, get_attack
from bench.cache import ArrayCache, cache_root, digest
from bench.data import load_dataset
from bench.defenses import get_defense
from bench.defenses.base import InputDefense
from bench.defenses.release import PSNR_MODES, RELEASES, calibrate
from bench.errors import UserError
from bench.models.adapter import ModelAdapter
from bench.models.sources import load_model
from bench.results import ResultWriter
from bench.suite import Suite


def model_label(spec) -> str:
    if isinstance(spec, dict):
        return str(spec.get("name") or spec.get("model"))
    return str(spec).split(":", 1)[-1]


@dataclass
class Job:
    """Cells sharing one encoding of the data."""

    defense: str
    params: dict
    point: dict
    release: str
    attack: object
    authorized: str  # "" for the clean baseline
    evaluated: list[str]
    cells: list[str] = field(default_factory=list)


class LocalExecutor:
    """Runs jobs one after another in this process."""

    def map(self, fn: Callable[[Job], list[dict]], jobs: Iterable[Job]) -> Iterator[list[dict]]:
        for job in jobs:
            yield fn(job)


@dataclass
class RunSummary:
    cells_total: int
    cells_done_before: int
    cells_run: int
    forwards: int
    encodings: int
    cache: dict
    wall_s: float
    results: Path


def _cell_fields(suite: Suite, job: Job, evaluated: str) -> dict:
    """What a cell is: the fields every result row carries and its resume key hashes."""
    return {
        "suite": suite.name,
        "defense": job.defense,
        "params": job.params,
        "point": job.point,
        "release": job.release,
        "attack": attack_label(job.attack),
        "authorized": job.authorized,
        "evaluated": evaluated,
    }


def _cell_key(suite: Suite, job: Job, evaluated: str) -> str:
    return digest({**_cell_fields(suite, job, evaluated), "data": suite.data, "seed": suite.seed})[:24]


class Runner:
    def __init__(
        self,
        suite: Suite,
        out_dir: Path,
        *,
        defenses: list[str] | None = None,
        models: list[str] | None = None,
        psnr: list[float] | None = None,
        releases: list[str] | None = None,
        cache_dir: Path | None = None,
        executor=None,
        progress: bool = True,
    ):
        self.suite = suite
        self.out_dir = Path(out_dir)
        self.progress = progress
        self.executor = executor or LocalExecutor()
        root = Path(cache_dir) if cache_dir else cache_root()
        self.forward_cache = ArrayCache(root, "forward")
        self.encoding_cache = ArrayCache(root, "encoding")
        self.forwards = 0
        self.encodings = 0
        self._models: dict[str, ModelAdapter] = {}
        self._fitted: dict[str, InputDefense] = {}
        self._first_maps: dict[str, tuple | None] = {}
        self._specs = {model_label(s): s for s in [*suite.authorized, *suite.evaluated]}
        self.authorized = [model_label(s) for s in suite.authorized]
        self.evaluated = [model_label(s) for s in suite.evaluated]
        self._restrict(defenses, models, psnr, releases)
        self.jobs = self._plan()

    def _restrict(self, defenses, models, psnr, releases) -> None:
        names = [d.name for d in self.suite.defenses]
        for d in defenses or []:
            if d not in names:
                raise UserError(f"defense {d!r} is not in suite {self.suite.name!r}; valid choices: {', '.join(names)}")
        for m in models or []:
            if m not in self._specs:
                raise UserError(f"model {m!r} is not in suite {self.suite.name!r}; valid choices: {', '.join(self._specs)}")
        for r in releases or []:
            if r not in RELEASES:
                raise UserError(f"unknown release format {r!r}; valid choices: {', '.join(RELEASES)}")
        self._only_defenses, self._only_psnr, self._only_releases = defenses, psnr, releases
        if models:
            self.authorized = [m for m in self.authorized if m in models]
            self.evaluated = [m for m in self.evaluated if m in models]

    def _plan(self) -> list[Job]:
        jobs = [Job("none", {}, {}, "clean", "none", "", list(self.evaluated))]
        for entry in self.suite.defenses:
            if self._only_defenses and entry.name not in self._only_defenses:
                continue
            cls = get_defense(entry.name)
            params = cls(**entry.params).params  # validates, fills defaults
            if entry.psnr_mode not in PSNR_MODES:
                raise UserError(f"defense {entry.name!r}: unknown psnr_mode {entry.psnr_mode!r}; valid: {', '.join(PSNR_MODES)}")
            for rel in entry.release:
                if rel not in RELEASES:
                    raise UserError(f"defense {entry.name!r}: unknown release {rel!r}; valid choices: {', '.join(RELEASES)}")
            for attack in entry.attacks:
                get_attack(attack)  # validates
            points = [p for p in entry.psnr if not self._only_psnr or p in self._only_psnr]
            releases = [r for r in entry.release if not self._only_releases or r in self._only_releases]
            for auth in self.authorized:
                for p in points:
                    for rel in releases:
                        for attack in entry.attacks:
                            point = {"psnr": p, "psnr_mode": entry.psnr_mode}
                            jobs.append(Job(entry.name, params, point, rel, attack, auth, list(self.evaluated)))
        for job in jobs:
            job.cells = [_cell_key(self.suite, job, e) for e in job.evaluated]
        return jobs

    # -- models and data -------------------------------------------------------------
    def model(self, label: str) -> ModelAdapter:
        if label not in self._models:
            self._models[label] = load_model(self._specs[label], progress=self.progress)
        return self._models[label]

    def _load_data(self):
        data = dict(self.suite.data)
        name = data.pop("dataset", None)
        if name is None:
            raise UserError(f"suite {self.suite.name!r}: [data] needs 'dataset = \"...\"'")
        split = data.pop("split", "test")
        subset, subset_seed = int(data.pop("subset", 0)), int(data.pop("subset_seed", self.suite.seed))
        return load_dataset(name, split, **data).subset(subset, subset_seed)

    # -- one job ----------------------------------------------------------------------
    def _defense(self, job: Job) -> InputDefense:
        cls = get_defense(job.defense)
        auth = self.model(job.authorized) if job.authorized and cls.model_specific else None
        key = digest([job.defense, job.params, auth.digest if auth else None])
        if key not in self._fitted:
            defense = cls(**job.params)
            if auth is not None:
                defense.fit(auth, self.data)
            self._fitted[key] = defense
        return self._fitted[key]

    def _input_identity(self, job: Job) -> dict:
        transforms = []
        if job.defense != "none":
            model_specific = get_defense(job.defense).model_specific
            transforms.append(
                {
                    "defense": job.defense,
                    "params": job.params,
                    "authorized": self.model(job.authorized).digest if model_specific else None,
                    "point": job.point,
                    "release": job.release,
                    "seed": self.suite.seed,
                }
            )
        if attack_label(job.attack) != "none":
            transforms.append({"attack": attack_label(job.attack), "seed": self.suite.seed})
        return {"data": self.data.identity, "transforms": transforms}

    def _encode(self, job: Job) -> tuple[torch.Tensor, dict]:
        x, start = self.data.images, time.perf_counter()
        defense = self._defense(job)
        stats: dict = {"psnr_true": None, "psnr_nominal": None, "calib_err_db": 0.0, "unreachable": 0}
        if job.defense != "none":
            dirs = defense.directions(x, self.data.indices, self.data.labels, self.suite.seed)
            std = self.model(job.authorized).preprocess.std if job.authorized else None
            if std is not None and len(std) == 1:
                std = std * x.shape[1]
            cal = calibrate(x, dirs, job.point["psnr"], job.release, job.point["psnr_mode"], std)
            x = cal.released
            stats.update(
                psnr_true=float(cal.psnr_true.mean()),
                psnr_nominal=None if cal.psnr_nominal is None else float(cal.psnr_nominal.mean()),
                calib_err_db=cal.max_err_db,
                unreachable=cal.unreachable,
            )
        x = get_attack(job.attack)(x, self.suite.seed)
        stats["encode_ms"] = (time.perf_counter() - start) * 1e3 / len(x)
        summary = defense.summary()
        stats["fit_ms"] = summary.pop("fit_ms", 0.0)
        stats["subspace_dim"] = summary.get("subspace_dim")
        stats["defense_summary"] = summary
        self.encodings += 1
        return x, stats

    def _first_layer_dev(self, model: ModelAdapter, x: torch.Tensor) -> np.ndarray:
        """Per-sample relative deviation of the model's own first linear map, released vs clean (float32)."""
        if model.digest not in self._first_maps:
            try:
                fl = model.first_linear().to(torch.float32)
                self._first_maps[model.digest] = (fl, fl.apply(self.data.images).norm(dim=1))
            except UserError:
                self._first_maps[model.digest] = None
        if self._first_maps[model.digest] is None:
            return np.full(len(x), np.nan)
        fl, clean_norm = self._first_maps[model.digest]
        return fl.relative_deviation(self.data.images, x.float(), clean_norm).numpy()

    def run_job(self, job: Job) -> list[dict]:
        start = time.perf_counter()
        before = dict(self.forward_cache.stats.as_dict())
        forwards_before = self.forwards
        identity = self._input_identity(job)
        input_digest = digest(identity)
        pending = [(e, c) for e, c in zip(job.evaluated, job.cells) if c not in self.done]
        outputs, released = {}, None
        enc_key = self.encoding_cache.key("", identity)
        enc = self.encoding_cache.get(enc_key)
        stats = None if enc is None else json.loads(str(enc["stats"]))

        def encode():
            x, st = self._encode(job)
            self.encoding_cache.put(enc_key, {"stats": np.array(json.dumps(st))})
            return x, st

        for e, _ in pending:
            model = self.model(e)
            key = self.forward_cache.key(model.digest, identity)
            out = self.forward_cache.get(key)
            if out is None:
                if released is None:
                    released, stats = encode()
                if tuple(released.shape[1:]) != tuple(model.preprocess.input_size):
                    raise UserError(
                        f"model {e!r} expects inputs of shape {tuple(model.preprocess.input_size)} but suite data has "
                        f"{tuple(released.shape[1:])}; pick models for this dataset or resize the data"
                    )
                out = {
                    "logits": model.predict(released).numpy(),
                    "first_layer_dev": self._first_layer_dev(model, released),
                }
                self.forwards += 1
                self.forward_cache.put(key, out)
            outputs[e] = out
        if stats is None:  # every forward cached but the encoding record was lost: re-encode, no forward
            released, stats = encode()
        after = self.forward_cache.stats.as_dict()
        wall = time.perf_counter() - start
        labels = self.data.labels.numpy()
        rows = []
        for e, cell in pending:
            model, out = self.model(e), outputs[e]
            auth = self.model(job.authorized) if job.authorized else None
            role = "clean" if not job.authorized else (
                "authorized" if e == job.authorized else ("same-arch" if model.arch == auth.arch else "unauthorized")
            )
            dev = out["first_layer_dev"]
            rows.append(
                {
                    "cell": cell,
                    **_cell_fields(self.suite, job, e),
                    "suite_digest": self.suite.digest,
                    "role": role,
                    "arch": {"authorized": auth.arch if auth else "", "evaluated": model.arch},
                    "metrics": {
                        "top1": float((out["logits"].argmax(1) == labels).mean() * 100),
                        "first_layer_dev": None if np.isnan(dev).all() else float(np.nanmean(dev)),
                    },
                    "encoding": {k: stats[k] for k in ("psnr_true", "psnr_nominal", "calib_err_db", "unreachable", "subspace_dim", "encode_ms", "fit_ms")},
                    "n": int(len(labels)),
                    "provenance": {
                        "model_digest": model.digest,
                        "authorized_digest": auth.digest if auth else None,
                        "input_digest": input_digest,
                        "defense_summary": stats["defense_summary"],
                        "versions": provenance.versions(),
                        "git": provenance.git_revision(),
                        "device": provenance.device(),
                        "seed": self.suite.seed,
                        "wall_s": wall,
                        "cache": {k: after[k] - before[k] for k in after},
                        "forwards": self.forwards - forwards_before,
                    },
                }
            )
        return rows

    # -- the run ----------------------------------------------------------------------
    def run(self) -> RunSummary:
        start = time.perf_counter()
        writer = ResultWriter(self.out_dir)
        self.done = writer.done_cells()
        total = sum(len(j.cells) for j in self.jobs)
        todo = [j for j in self.jobs if any(c not in self.done for c in j.cells)]
        done_before = sum(c in self.done for j in self.jobs for c in j.cells)
        if todo:
            self.data = self._load_data()
        bar = tqdm(total=total - done_before, desc=f"{self.suite.name} cells", unit="cell", disable=not self.progress)
        for rows in self.executor.map(self.run_job, todo):
            writer.append(rows)
            bar.update(len(rows))
        bar.close()
        return RunSummary(
            cells_total=total,
            cells_done_before=done_before,
            cells_run=total - done_before,
            forwards=self.forwards,
            encodings=self.encodings,
            cache=self.forward_cache.stats.as_dict(),
            wall_s=time.perf_counter() - start,
            results=writer.path,
        )

