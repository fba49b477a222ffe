"""Expand a suite into cells, run only the missing ones, write one result row per cell.

A *cell* is (defense, parameter point, release format, attack, trial, authorized model,
evaluated model). Cells that share an encoding form a *job*: the data is encoded once for
the authorized model and every evaluated model reads it. A model-authorization job protects
the authorized model once and scores the models its defense names (bench.model_cells).
Jobs go through an `Executor` (local, in-process, here; a distributed engine can implement
the same `map`). Forward passes and encodings are cached by content (bench.cache), so a
clean pass is shared by every defense and every later run.
"""

from __future__ import annotations

import itertools
import json
import time
from collections import Counter
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np
import torch
from tqdm.auto import tqdm

from bench import provenance
from bench.attacks import DATA_KINDS, attack_label, get_attack
from bench.attacks.attacker import AttackerView, attack_inputs
from bench.cache import ArrayCache, cache_root, digest
from bench.data import load_dataset
from bench.defenses import get_defense
from bench.defenses.base import InputDefense
from bench.defenses.release import PSNR_MODES, RELEASES, calibrate
from bench.encode_space import encode_space, space_input, space_transform, to_pixels
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
    """Cells sharing one encoding of the data (input defenses) or one protected model (model defenses).

    Input jobs know their cells when planned. A model job's cells are the models its defense
    scores (`ModelDefense.evaluations`), known only when it runs: it is keyed by `key` and
    done when `expected` rows with that key exist.
    """

    defense: str
    params: dict
    point: dict
    release: str
    attack: object
    authorized: str  # "" for the clean baseline
    evaluated: list[str]
    trial: int = 0
    protocol: str = "input"
    cells: list[str] = field(default_factory=list)
    key: str = ""


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
        "trial": job.trial,
    }


ATTACK_KINDS = {"input": DATA_KINDS, "model": ("model", "input")}  # protocol -> attack kinds it takes
ENCODING_FIELDS = ("psnr_true", "psnr_nominal", "calib_err_db", "unreachable", "subspace_dim", "encode_ms", "fit_ms")


def _grid(sweep: dict) -> list[dict]:
    """Every combination of the swept parameter values (one empty point when nothing is swept)."""
    return [dict(zip(sweep, values)) for values in itertools.product(*sweep.values())]


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
        full: bool = False,
    ):
        self.suite = suite
        self.out_dir = Path(out_dir)
        self.progress = progress
        self.full = full
        self.executor = executor or LocalExecutor()
        root = Path(cache_dir) if cache_dir else cache_root()
        self.forward_cache = ArrayCache(root, "forward")
        self.encoding_cache = ArrayCache(root, "encoding")
        self.forwards = 0
        self.encodings = 0
        self._models: dict[str, ModelAdapter] = {}
        self._fitted: dict[str, InputDefense] = {}
        self._first_maps: dict[str, tuple | None] = {}
        self.encode_space = encode_space(suite.data)  # where input defenses recode (bench.encode_space)
        self._reference: tuple | None = None  # (released x, its clean counterpart) for first-layer deviations
        self._last_protected: tuple = (None, None)  # (key, Protected): jobs differing only in the attack reuse it
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
            if (self._only_defenses and entry.name not in self._only_defenses) or (entry.tier == "full" and not self.full):
                continue
            cls = get_defense(entry.name)
            for attack in entry.attacks:
                kind = get_attack(attack).kind  # validates
                allowed = ATTACK_KINDS.get(cls.protocol, (kind,))
                if kind not in allowed:
                    raise UserError(
                        f"defense {entry.name!r} ({cls.protocol} protocol) cannot take attack {attack_label(attack)!r} "
                        f"of kind {kind!r}; valid kinds here: {', '.join(allowed)}"
                    )
            for sweep_point in _grid(entry.sweep):
                params = cls(**{**entry.params, **sweep_point}).params  # validates, fills defaults
                if cls.protocol == "verify":  # ownership verification: bench.verify_cells keys its jobs
                    from bench.verify_cells import plan_verify

                    jobs += plan_verify(self, entry, params, sweep_point)
                elif cls.protocol == "model":
                    jobs += self._plan_model(entry, params, sweep_point)
                else:
                    jobs += self._plan_input(entry, params, sweep_point)
        for job in jobs:
            if job.protocol == "model":
                job.key = _cell_key(self.suite, job, "")
            elif job.protocol != "verify":
                job.cells = [_cell_key(self.suite, job, e) for e in job.evaluated]
        return jobs

    def _authorized_for(self, entry) -> list[str]:
        """The authorized models an entry protects: its `models` (validated), else all of the suite's.
        A spec with a source ("zoo:fhe-s0") is a model only this entry protects (e.g. FHE's)."""
        extra = [model_label(m) for m in entry.models if ":" in m and model_label(m) not in self.authorized]
        self._specs.update({model_label(m): m for m in entry.models if ":" in m})
        for label in entry.models:
            if model_label(label) not in self._specs:
                raise UserError(f"defense {entry.name!r}: model {label!r} in 'models' is not in the suite; "
                                f"valid choices: {', '.join(self._specs)} or a spec such as 'zoo:fhe-s0'")
        labels = {model_label(m) for m in entry.models}
        return [a for a in self.authorized if not entry.models or a in labels] + extra

    def _plan_input(self, entry, params: dict, sweep_point: dict) -> list[Job]:
        if entry.psnr_mode not in PSNR_MODES:
            raise UserError(f"defense {entry.name!r}: unknown psnr_mode {entry.psnr_mode!r}; valid: {', '.join(PSNR_MODES)}")
        for rel in entry.release:
            if rel not in RELEASES:
                raise UserError(f"defense {entry.name!r}: unknown release {rel!r}; valid choices: {', '.join(RELEASES)}")
        points = [p for p in entry.psnr if not self._only_psnr or p in self._only_psnr]
        releases = [r for r in entry.release if not self._only_releases or r in self._only_releases]
        return [
            Job(entry.name, params, {"psnr": p, "psnr_mode": entry.psnr_mode, **sweep_point}, rel, attack, auth,
                list(self.evaluated), trial)
            for auth in self._authorized_for(entry)
            for p in points
            for rel in releases
            for trial in range(entry.trials)
            for attack in entry.attacks
        ]

    def _plan_model(self, entry, params: dict, sweep_point: dict) -> list[Job]:
        return [
            Job(entry.name, params, dict(sweep_point), "model", attack, auth, [], trial, "model")
            for auth in self._authorized_for(entry)
            for trial in range(entry.trials)
            for attack in entry.attacks
        ]

    # -- models and data -------------------------------------------------------------
    def model(self, label: str) -> ModelAdapter:
        if label not in self._models:
            adapter = load_model(self._specs[label], progress=self.progress)
            adapter.name = label  # the suite's label names the model in every row
            self._models[label] = adapter
        return self._models[label]

    def _load_split(self, split_key: str, default: str):
        data = dict(self.suite.data)
        name = data.pop("dataset", None)
        if name is None:
            raise UserError(f"suite {self.suite.name!r}: [data] needs 'dataset = \"...\"'")
        split = data.pop(split_key, default)
        data.pop("split", None), data.pop("train_split", None)
        subset, subset_seed = int(data.pop("subset", 0)), int(data.pop("subset_seed", self.suite.seed))
        data.pop("encode_space", None)
        return load_dataset(name, split, subset if split_key == "split" else 0, subset_seed, **data)

    @cached_property
    def train_data(self):
        """The defender's (and attacker's) training split, for model defenses and model attacks."""
        return self._load_split("train_split", "train")

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
                    "seed": self.suite.seed + job.trial,
                }
            )
            space = space_transform(self.data.images, self.model(job.authorized) if job.authorized else None,
                                    self.encode_space)
            if space is not None:  # only where it changes the encoding: older identities stay valid
                transforms[-1]["space"] = space
        if attack_label(job.attack) != "none":
            transforms.append({"attack": attack_label(job.attack), "seed": self.suite.seed + job.trial})
        return {"data": self.data.identity, "transforms": transforms}

    def release(self, job: Job, split, seed: int) -> tuple[torch.Tensor, torch.Tensor, dict]:
        """`split`'s images as the job's defense releases them (directions, PSNR calibration, release format),
        their clean counterpart in the encode space, and the encoding stats."""
        x = split.images
        stats: dict = {"psnr_true": None, "psnr_nominal": None, "calib_err_db": 0.0, "unreachable": 0}
        if job.defense == "none":
            return x, x, stats
        auth = self.model(job.authorized) if job.authorized else None
        x = space_input(x, auth, self.encode_space)
        dirs, residual = to_pixels(self._defense(job).directions(x, split.indices, split.labels, seed), x, auth)
        if residual is not None:
            stats["lift_residual"] = float(residual.mean())
        std = auth.preprocess.std if auth else None
        if std is not None and len(std) == 1:
            std = std * x.shape[1]
        cal = calibrate(x, dirs, job.point["psnr"], job.release, job.point["psnr_mode"], std)
        stats.update(
            psnr_true=float(cal.psnr_true.mean()),
            psnr_nominal=None if cal.psnr_nominal is None else float(cal.psnr_nominal.mean()),
            calib_err_db=cal.max_err_db,
            unreachable=cal.unreachable,
        )
        return cal.released, x, stats

    def _encode(self, job: Job) -> tuple[torch.Tensor, dict]:
        start, seed = time.perf_counter(), self.suite.seed + job.trial
        x, clean, stats = self.release(job, self.data, seed)
        stats["encode_ms"] = (time.perf_counter() - start) * 1e3 / len(x)
        x, stats["attack_stats"] = attack_inputs(self, job, x, clean, seed)
        self._reference = (x, clean)
        summary = self._defense(job).summary()
        if "lift_residual" in stats:
            summary["lift_residual"] = stats.pop("lift_residual")
        stats["fit_ms"] = summary.pop("fit_ms", 0.0)
        stats["subspace_dim"] = summary.get("subspace_dim")
        stats["defense_summary"] = summary
        self.encodings += 1
        return x, stats

    def _first_layer_dev(self, model: ModelAdapter, x: torch.Tensor) -> np.ndarray:
        """Per-sample relative deviation of the model's own first linear map, released vs clean (float32),
        both through the model's own resize and crop; clean is x's counterpart in its encode space."""
        if model.digest not in self._first_maps:
            try:
                fl = model.first_linear().to(torch.float32)
                geometry = model.preprocess.geometry
                self._first_maps[model.digest] = (fl, fl.apply(geometry(self.data.images.float())).norm(dim=1))
            except UserError:
                self._first_maps[model.digest] = None
        if self._first_maps[model.digest] is None:
            return np.full(len(x), np.nan)
        fl, clean_norm = self._first_maps[model.digest]
        reference = self.data.images
        if self._reference is not None and self._reference[0] is x:
            reference = self._reference[1]
        if reference.shape != x.shape:  # e.g. an attack that changed the size: no pixel-wise counterpart
            return np.full(len(x), np.nan)
        geometry = model.preprocess.geometry
        clean = geometry(reference.float())
        norm = clean_norm if reference is self.data.images else None
        return fl.relative_deviation(clean, geometry(x.float()), norm).numpy()

    def protect(self, job: Job, defense, model: ModelAdapter):
        """Protect once per (defense, params, model, trial) on the defender's training split."""
        key = digest([job.defense, job.params, model.digest, job.trial])
        if self._last_protected[0] != key:
            self._last_protected = (key, defense.protect(model, self.train_data, self.suite.seed + job.trial))
        return self._last_protected[1]

    def forward(self, model: ModelAdapter, identity: dict, inputs: Callable[[], torch.Tensor],
                adapted: Callable[[], ModelAdapter] | None = None) -> dict:
        """Logits and first-layer deviations of `model` on the inputs `identity` names, from the cache
        when present; `inputs()` is called (once per job, by the caller's memo) only on a miss. With
        `adapted` (an adaptation attack), the logits on a miss come from the model it returns; the
        identity names the attack, so a warm rerun neither adapts nor forwards."""
        key = self.forward_cache.key(model.digest, identity)
        out = self.forward_cache.get(key)
        if out is None:
            x = inputs()
            if x.ndim != 4 or x.shape[1] != model.preprocess.input_size[0]:  # any size: the model resizes and crops
                raise UserError(
                    f"model {model.name!r} expects inputs of shape {tuple(model.preprocess.input_size)} (any height and "
                    f"width: it resizes and crops) but suite data has {tuple(x.shape[1:])}; pick models for this dataset"
                )
            predictor = adapted() if adapted else model
            out = {"logits": predictor.predict(x).numpy(), "first_layer_dev": self._first_layer_dev(model, x)}
            self.forwards += 1
            self.forward_cache.put(key, out)
        return out

    def row(self, job: Job, cell: str, evaluated: str, role: str, model: ModelAdapter, out: dict, extra: dict) -> dict:
        """One result row (schema: bench.results)."""
        auth = self.model(job.authorized) if job.authorized else None
        dev = out["first_layer_dev"]
        scored = np.isfinite(out["logits"]).all(1)  # a model may score a subset only (e.g. encrypted inference)
        labels = self.data.labels.numpy()[scored]
        return {
            "cell": cell,
            **_cell_fields(self.suite, job, evaluated),
            "suite_digest": self.suite.digest,
            "role": role,
            "arch": {"authorized": auth.arch if auth else "", "evaluated": model.arch},
            "metrics": {
                "top1": float((out["logits"][scored].argmax(1) == labels).mean() * 100) if scored.any() else None,
                "first_layer_dev": None if np.isnan(dev).all() else float(np.nanmean(dev)),
            },
            "encoding": extra.get("encoding"),
            "attack_stats": extra.get("attack_stats"),
            "cost": extra.get("cost"),
            "n": int(scored.sum()),
            "provenance": provenance.row_provenance(
                model.digest, auth.digest if auth else None, extra["input_digest"], extra.get("defense_summary"),
                self.suite.seed + job.trial, extra["wall_s"], extra["cache"], extra["forwards"]),
        }

    def snapshot(self):
        """Snapshot for per-job wall time, cache and forward counts."""
        return time.perf_counter(), dict(self.forward_cache.stats.as_dict()), self.forwards

    def since(self, snapshot) -> dict:
        start, before, forwards = snapshot
        after = self.forward_cache.stats.as_dict()
        return {
            "wall_s": time.perf_counter() - start,
            "cache": {k: after[k] - before[k] for k in after},
            "forwards": self.forwards - forwards,
        }

    def run_job(self, job: Job) -> list[dict]:
        if job.protocol == "model":
            from bench.model_cells import run_model_job

            return run_model_job(self, job)
        if job.protocol == "verify":
            from bench.verify_cells import run_verify_job

            return run_verify_job(self, job)
        snapshot = self.snapshot()
        identity = self._input_identity(job)
        enc_key = self.encoding_cache.key("", identity)
        enc = self.encoding_cache.get(enc_key)
        memo: dict = {"stats": None if enc is None else json.loads(str(enc["stats"]))}

        def released() -> torch.Tensor:
            if "x" not in memo:
                memo["x"], memo["stats"] = self._encode(job)
                self.encoding_cache.put(enc_key, {"stats": np.array(json.dumps(memo["stats"]))})
            return memo["x"]

        pending = [(e, c) for e, c in zip(job.evaluated, job.cells) if c not in self.done]
        attack, seed = get_attack(job.attack), self.suite.seed + job.trial
        view = AttackerView(self, job, seed) if attack.kind == "adapt" else None

        def adapter_for(model: ModelAdapter):
            if view is None or model.name == job.authorized:  # the attacker adapts unauthorized models only
                return None
            return lambda: attack.adapt(model, view, seed)

        outputs = {e: self.forward(self.model(e), identity, released, adapter_for(self.model(e))) for e, _ in pending}
        if memo["stats"] is None:  # every forward cached but the encoding record was lost: re-encode, no forward
            released()
        stats = memo["stats"]
        extra = {
            "encoding": {k: stats[k] for k in ENCODING_FIELDS} if job.defense != "none" else None,
            "defense_summary": stats["defense_summary"],
            "attack_stats": stats.get("attack_stats") or None,
            "input_digest": digest(identity),
            **self.since(snapshot),
        }
        rows = []
        for e, cell in pending:
            model = self.model(e)
            if not job.authorized:
                role = "clean"
            elif e == job.authorized:
                role = "authorized"
            else:
                role = "same-arch" if model.arch == self.model(job.authorized).arch else "unauthorized"
            rows.append(self.row(job, cell, e, role, model, outputs[e], extra))
        return rows

    # -- the run ----------------------------------------------------------------------
    def run(self) -> RunSummary:
        start = time.perf_counter()
        writer = ResultWriter(self.out_dir)
        rows = writer.rows()
        self.done = {r["cell"] for r in rows}
        saved = Counter(r["job"] for r in rows if r.get("job"))
        finished = {r["job"] for r in rows if r.get("job") and saved[r["job"]] >= r["job_rows"]}

        def pending(job: Job) -> bool:
            if job.protocol == "model":
                return job.key not in finished
            return any(c not in self.done for c in job.cells)

        todo = [j for j in self.jobs if pending(j)]
        done_before = len(rows)
        if todo:
            self.data = self._load_split("split", "test")
        estimate = sum(len(j.cells) or 2 for j in todo) - sum(c in self.done for j in todo for c in j.cells)
        bar = tqdm(total=estimate, desc=f"{self.suite.name} cells", unit="cell", disable=not self.progress)
        run = 0
        for new_rows in self.executor.map(self.run_job, todo):
            writer.append(new_rows)
            run += len(new_rows)
            bar.total = max(bar.total, run)
            bar.update(len(new_rows))
        bar.close()
        return RunSummary(
            cells_total=done_before + run,
            cells_done_before=done_before,
            cells_run=run,
            forwards=self.forwards,
            encodings=self.encodings,
            cache=self.forward_cache.stats.as_dict(),
            wall_s=time.perf_counter() - start,
            results=writer.path,
        )
